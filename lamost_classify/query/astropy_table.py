"""A selection as an astropy Table, with units and descriptions from the catalog's field metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from .errors import QueryError
from .scan import select
from .selection import Cone, Selection

def read_table(catalog: str | Path | ds.Dataset, selection: Selection | None = None, **criteria: Any):
    """The selected rows as an astropy Table with units and descriptions from the schema.

    Pass a ``Selection`` or its fields as keywords, e.g.
    ``read_table("catalog/", classes=["QSO"], min_prob=0.9, cone=Cone(150, 2, 3600))``.
    Nulls become masked values. Everything selected is loaded: add ``limit`` or criteria on big catalogs.
    """
    if selection is None:
        if "cone" in criteria and isinstance(criteria["cone"], (tuple, list)):
            criteria["cone"] = Cone(*criteria["cone"])
        for name in ("classes", "columns", "obsids"):
            if isinstance(criteria.get(name), str):
                criteria[name] = (criteria[name],)
            elif criteria.get(name) is not None:
                criteria[name] = tuple(criteria[name])
        selection = Selection(**criteria)
    elif criteria:
        raise QueryError("give either a Selection or keyword criteria, not both")
    return arrow_to_astropy(select(catalog, selection).read_all())


def arrow_to_astropy(table: pa.Table):
    """An Arrow table as an astropy Table, units and descriptions from field metadata, nulls masked."""
    import pyarrow.compute as pc
    from astropy.table import Column, MaskedColumn, Table

    out = Table()
    for f, column in zip(table.schema, table.columns):
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        mask = column.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_string(f.type):
            values = pc.fill_null(column, "").to_numpy(zero_copy_only=False).astype(str)
        elif pa.types.is_floating(f.type):
            values = pc.fill_null(column, float("nan")).to_numpy(zero_copy_only=False)
        else:
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        info = {"unit": meta.get("unit") or None, "description": meta.get("description") or None}
        out[f.name] = MaskedColumn(values, mask=mask, **info) if mask.any() else Column(values, **info)
    return out
