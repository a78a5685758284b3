-- Initial schema, SQLite dialect (STRICT tables; times are Unix seconds).
CREATE TABLE participants (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    organisation TEXT NOT NULL,
    country TEXT NOT NULL,
    display_name TEXT NOT NULL,
    signing_key BLOB NOT NULL,
    age_recipient TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    enrolment_audit_index INTEGER
) STRICT;

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    metadata BLOB NOT NULL,
    created_by TEXT NOT NULL REFERENCES participants (id),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    case_id TEXT NOT NULL REFERENCES cases (id),
    participant_id TEXT NOT NULL REFERENCES participants (id),
    role TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    removed_at INTEGER,
    PRIMARY KEY (case_id, participant_id, added_at)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX memberships_active ON memberships (case_id, participant_id)
    WHERE removed_at IS NULL;
CREATE INDEX memberships_by_participant ON memberships (participant_id);

CREATE TABLE key_epochs (
    case_id TEXT NOT NULL REFERENCES cases (id),
    epoch INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES participants (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, epoch)
) STRICT, WITHOUT ROWID;

CREATE TABLE envelopes (
    case_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    data BLOB NOT NULL,
    PRIMARY KEY (case_id, epoch, participant_id),
    FOREIGN KEY (case_id, epoch) REFERENCES key_epochs (case_id, epoch)
) STRICT, WITHOUT ROWID;

CREATE TABLE evidence (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    ciphertext_size INTEGER NOT NULL,
    sealed_manifest BLOB NOT NULL,
    uploader TEXT NOT NULL REFERENCES participants (id),
    epoch INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,
    audit_index INTEGER NOT NULL,
    FOREIGN KEY (case_id, epoch) REFERENCES key_epochs (case_id, epoch)
) STRICT;
CREATE INDEX evidence_by_case ON evidence (case_id, committed_at);

CREATE TABLE upload_sessions (
    id TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    case_id TEXT NOT NULL REFERENCES cases (id),
    length INTEGER NOT NULL,
    upload_offset INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    metadata BLOB NOT NULL
) STRICT;
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_at);

CREATE TABLE seen_nonces (
    keyid TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (keyid, nonce)
) STRICT, WITHOUT ROWID;
CREATE INDEX seen_nonces_by_expiry ON seen_nonces (expires_at);

CREATE TABLE audit_entries (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
) STRICT;

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;

-- One row: the tree size, its frontier (full-subtree roots, 32 bytes each) and
-- the hash of the last entry (the next entry's prev).
CREATE TABLE audit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    frontier BLOB NOT NULL,
    last_entry_hash BLOB NOT NULL
) STRICT;
INSERT INTO audit_state (id, size, frontier, last_entry_hash) VALUES (1, 0, X'', zeroblob(32));

CREATE TABLE audit_checkpoints (
    size INTEGER PRIMARY KEY,
    root_hash BLOB NOT NULL,
    note BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
