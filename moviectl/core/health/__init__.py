"""Health: the checks (``checks.py``) and the HTTP probe service (``http.py``)."""
