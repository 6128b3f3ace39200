"""The ``--where`` guard: a user's condition is parsed by DuckDB and checked token by token and node by
node against allow lists before it runs, so a condition can read the catalog's columns and nothing else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb

from .errors import UnsafeWhereError

# Expression node classes a condition may contain (DuckDB's parsed-expression classes).
_ALLOWED_NODES = {
    "COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "OPERATOR", "BETWEEN", "CASE", "CAST", "TYPE",
    "COLLATE",
}
# Operator node types: the rest (ARRAY_EXTRACT, STRUCT_EXTRACT, ...) are not needed on flat columns.
_ALLOWED_OPERATORS = {
    "COMPARE_IN", "COMPARE_NOT_IN", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "OPERATOR_NOT",
    "OPERATOR_COALESCE", "OPERATOR_NULLIF",
}
# Scalar functions a condition may call: arithmetic, maths and string tests. Nothing that reads
# settings, files, the environment or other tables.
_ALLOWED_FUNCTIONS = {
    # operators parse as functions
    "+", "-", "*", "/", "//", "%", "**", "^", "&", "|", "<<", ">>", "~", "xor", "||",
    "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "like", "ilike", "not_like", "not_ilike", "glob",
    # maths
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "pow", "power", "exp", "ln", "log",
    "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "radians", "degrees", "pi",
    "greatest", "least", "sign", "mod", "isnan", "isinf", "isfinite", "bit_count", "hypot",
    # strings
    "lower", "upper", "lcase", "ucase", "length", "strlen", "substr", "substring", "starts_with",
    "ends_with", "prefix", "suffix", "contains", "trim", "ltrim", "rtrim", "replace", "concat", "instr",
    "position", "strpos", "left", "right", "regexp_matches", "regexp_full_match", "regexp_extract",
    "ifnull", "nullif", "coalesce",
}
# Types a condition may cast to. An unknown word before a string ("ATTACH 'x'") parses as a cast to a
# type of that name: refusing it here gives a clear message instead of a binder error.
_ALLOWED_TYPES = {
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "VARCHAR", "DATE", "TIMESTAMP", "INTERVAL",
}


def validate_where(where: str, columns: Sequence[str]) -> None:
    """Refuse a ``--where`` condition unless it is one plain expression over the catalog's columns.

    DuckDB parses ``SELECT * FROM catalog WHERE (<where>)``; the result must be a single plain SELECT of
    the catalog whose condition holds only allowed node kinds, allowed functions and known columns.
    Raises ``UnsafeWhereError`` (a ``QueryError``) with the reason.
    """
    if not where or not where.strip():
        raise UnsafeWhereError("--where is empty")
    # A comment or ';' could cut the condition loose from the query it is pasted into. Looked for in
    # DuckDB's own tokens, so text inside string literals ('%--%', '*/*') is just text.
    tokens = duckdb.tokenize(where)
    for i, (start, kind) in enumerate(tokens):
        text = where[start : tokens[i + 1][0] if i + 1 < len(tokens) else len(where)]
        if kind == duckdb.token_type.comment:
            raise UnsafeWhereError(f"--where refused: an SQL comment ({text.strip()!r}) is not allowed in a condition")
        if kind == duckdb.token_type.operator and ";" in text:
            raise UnsafeWhereError("--where refused: ';' (more than one statement) is not allowed in a condition")
    sql = f"SELECT * FROM catalog WHERE ({where})"
    try:
        with duckdb.connect(config={"enable_external_access": False}) as con:
            tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except RecursionError:
        tree = {"error": True, "error_message": "expression depth"}
    if tree.get("error") and "expression depth" in str(tree.get("error_message")):
        raise UnsafeWhereError("--where is nested too deeply to check: write it with fewer nested levels")
    if tree.get("error"):
        raise UnsafeWhereError(f"--where is not a valid SQL condition: {tree.get('error_message', tree)}")
    statements = tree["statements"]
    if len(statements) != 1:
        raise UnsafeWhereError("--where refused: it must be one condition, not several statements")
    node = statements[0]["node"]
    plain_select = (
        node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not node.get("cte_map", {}).get("map")
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and [e.get("class") for e in node.get("select_list", [])] == ["STAR"]
        and node.get("from_table", {}).get("type") == "BASE_TABLE"
        and node["from_table"].get("table_name") == "catalog"
    )
    if not plain_select:
        raise UnsafeWhereError("--where refused: it must be a condition, not a query (UNION, ORDER, LIMIT ...)")
    known = {c.lower() for c in columns}
    _check_node(node["where_clause"], known)


def _check_node(tree: Any, known: set[str]) -> None:
    """Check every node of a parsed condition; a stack, not recursion, so any depth DuckDB parses is fine."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            _check_one_node(node, known)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))


def _check_one_node(node: dict, known: set[str]) -> None:
    kind = node.get("class")
    if kind is not None and "type" in node:
        if kind not in _ALLOWED_NODES and kind != "FUNCTION":
            what = {"SUBQUERY": "a subquery", "PARAMETER": "a parameter", "LAMBDA": "a lambda",
                    "WINDOW": "a window function", "STAR": "*"}.get(kind, kind.lower())
            raise UnsafeWhereError(f"--where refused: {what} is not allowed in a condition")
        if kind == "OPERATOR" and node["type"] not in _ALLOWED_OPERATORS:
            raise UnsafeWhereError(f"--where refused: operator {node['type'].lower()} is not allowed")
        if kind == "FUNCTION":
            name = node.get("function_name", "").lower()
            if node.get("schema") or node.get("catalog") or name not in _ALLOWED_FUNCTIONS:
                raise UnsafeWhereError(f"--where refused: function {name!r} is not allowed in a condition")
        if kind == "TYPE":
            name = str(node.get("type_name", "")).upper()
            if node.get("schema") or node.get("catalog") or name not in _ALLOWED_TYPES:
                raise UnsafeWhereError(
                    f"--where refused: {name!r} is not a type a condition may cast to (a statement keyword?)"
                )
        if kind == "COLUMN_REF":
            names = [n.lower() for n in node.get("column_names", [])]
            if not (len(names) == 1 or (len(names) == 2 and names[0] == "catalog")) or names[-1] not in known:
                raise UnsafeWhereError(
                    f"--where refers to unknown column {'.'.join(node.get('column_names', []))!r}; "
                    f"columns are: {', '.join(sorted(known))}"
                )
