"""The core: one module or package per capability. It never prints and never exits.

Each public function takes ``Settings`` (and its inputs) and returns a dataclass or
raises a ``MoviectlError``; the CLI, the pytest plugin and the HTTP probe present it.
"""
