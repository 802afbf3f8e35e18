"""Fleet triage: crash signatures, buckets and the Parquet catalogue; local process pool or Dask.

>>> from kdumplab.fleet import triage
>>> catalogue = triage(["/var/crash/a", "/var/crash/b"], jobs=2)       # doctest: +SKIP
>>> catalogue.buckets[["signature", "count"]]                           # doctest: +SKIP
"""

from kdumplab.fleet.catalogue import Catalogue, bucket, triage
from kdumplab.fleet.signature import Signature, crash_signature, panic_kind

__all__ = ["Catalogue", "Signature", "bucket", "crash_signature", "panic_kind", "triage"]
