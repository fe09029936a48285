"""Join kinds (inner, outer, any). Lives with the joins so they depend on nothing above them."""
from __future__ import annotations

import enum


class JoinType(str, enum.Enum):
    INNER = "inner"
    OUTER = "outer"
    ANY = "any"
