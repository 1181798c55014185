"""Result dataclasses to JSON-ready values: the one conversion ``--json`` and HTTP use.

Fields marked ``metadata={"secret": True}`` are left out; names listed in a class's
``__json_extra__`` (properties) are added.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID


def jsonable(obj: Any) -> Any:
    """Turn results (dataclasses, paths, datetimes, ...) into JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {
            f.name: jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("secret")
        }
        for name in getattr(obj, "__json_extra__", ()):
            data[name] = jsonable(getattr(obj, name))
        return data
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path | UUID):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump())
    return obj
