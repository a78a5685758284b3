"""exchange.witness: a C2SP tlog-witness server that cosigns consistent checkpoints.

``protocol`` parses and decides add-checkpoint requests (no I/O), ``state``
keeps what was cosigned per log origin in SQLite, ``server`` is the aiohttp
process (``exchange witness serve``), ``keys`` reads and writes the cosigner
key file.
"""
