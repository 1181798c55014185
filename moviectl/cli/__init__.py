"""moviectl's command line and presentation: the Typer app, one module per command group,
the output layer (``output.py``: Rich and ``--json``) and the renderers (``render.py``).

The console script is ``moviectl.cli.entry:main``; it answers ``health --live`` without
loading Typer and otherwise runs ``moviectl.cli.app``.
"""
