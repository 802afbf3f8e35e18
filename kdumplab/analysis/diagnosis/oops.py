"""Page faults in kernel mode: a NULL pointer dereference, a bad paging request, a general protection fault.

The kernel logs ``BUG: kernel NULL pointer dereference, address: ...`` (or ``BUG: unable to handle page fault
for address``, ``general protection fault``) then the oops: ``RIP: 0010:fn+0x9/0x20 [mod]``, the registers,
CR2 and the call trace. With ``panic_on_oops`` the crash kernel starts from ``oops_end()`` with the faulting
registers, so the crashed stack begins at the faulting function. Titles as syzbot's.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['BUG: kernel NULL pointer dereference in mydrv_ioctl']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import oops_finding
from kdumplab.analysis.diagnosis.context import Context, Finding

KINDS = (
    ("null-deref", r"BUG: (?:kernel NULL pointer dereference|unable to handle kernel NULL pointer dereference)",
     "BUG: kernel NULL pointer dereference in {}"),
    ("page-fault", r"BUG: unable to handle (?:page fault for address|kernel paging request)",
     "BUG: unable to handle kernel paging request in {}"),
    ("gpf", r"general protection fault", "general protection fault in {}"),
)


def find(ctx: Context) -> list[Finding]:
    for kind, header, template in KINDS:
        found = oops_finding(ctx, kind, header, template, what="page fault")
        if found:
            return [found]
    return []
