"""The survey pipeline, in the order the data flows:

discover (``plan``) -> read (``readers``) -> resample/normalise (``grid``) -> infer -> write (``catalog``).

The per-batch work (``stages``) is plain Python and numpy so it tests alone; ``graph`` wires it into
Dask. Nothing here knows about layers: the network is reached through ``lamost_classify.model``.
"""
