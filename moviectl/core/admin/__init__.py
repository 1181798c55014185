"""`db admin`: pgAdmin 4 in desktop mode, with the app's server already registered.

``venv.py`` makes pgAdmin's own virtual environment (its pins cannot share moviectl's),
``files.py`` writes its private directory (configuration, servers.json, the 0600 pgpass
file), ``run.py`` starts, finds and stops the one pgAdmin of a project.
"""
