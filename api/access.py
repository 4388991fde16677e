"""What each route needs: the one table of access rules (`api.routes` fills it).

`Access(scope, target)`: the caller needs `scope` over the target's collection —
`COLLECTION` (named in the path), `DOCUMENT` (the collection of the document named in
the path), or `EVERYTHING` (every collection: the cross-collection admin routes);
`CALLER` lets in any caller with some grant and leaves the filtering to the handler
(`api.security.principal_of`), and `PUBLIC` needs nothing. A route under /v1 that the
table does not name needs `admin` over everything: forgetting a rule fails closed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sheaf.domain.scopes import Scope


class Target(enum.Enum):
    PUBLIC = "public"
    COLLECTION = "collection"
    DOCUMENT = "document"
    EVERYTHING = "everything"
    CALLER = "caller"  # any caller with a grant; the handler shows only what it may see


@dataclass(frozen=True, slots=True)
class Access:
    scope: Scope
    target: Target
    rate_limited: bool = False  # uploads: one token of the caller's bucket per request


PUBLIC = Access(Scope.READ, Target.PUBLIC)
ADMIN_ONLY = Access(Scope.ADMIN, Target.EVERYTHING)
