-- Initial schema, PostgreSQL dialect ( times are Unix seconds).
CREATE TABLE participants (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    organisation TEXT NOT NULL,
    country TEXT NOT NULL,
    display_name TEXT NOT NULL,
    signing_key BYTEA NOT NULL,
    age_recipient TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    enrolment_audit_index BIGINT
);

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    metadata BYTEA NOT NULL,
    created_by TEXT NOT NULL REFERENCES participants (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    case_id TEXT NOT NULL REFERENCES cases (id),
    participant_id TEXT NOT NULL REFERENCES participants (id),
    role TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    removed_at BIGINT,
    PRIMARY KEY (case_id, participant_id, added_at)
);
CREATE UNIQUE INDEX memberships_active ON memberships (case_id, participant_id)
    WHERE removed_at IS NULL;
CREATE INDEX memberships_by_participant ON memberships (participant_id);

CREATE TABLE key_epochs (
    case_id TEXT NOT NULL REFERENCES cases (id),
    epoch INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES participants (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, epoch)
);

CREATE TABLE envelopes (
    case_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    data BYTEA NOT NULL,
    PRIMARY KEY (case_id, epoch, participant_id),
    FOREIGN KEY (case_id, epoch) REFERENCES key_epochs (case_id, epoch)
);

CREATE TABLE evidence (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    ciphertext_size BIGINT NOT NULL,
    sealed_manifest BYTEA NOT NULL,
    uploader TEXT NOT NULL REFERENCES participants (id),
    epoch INTEGER NOT NULL,
    committed_at BIGINT NOT NULL,
    audit_index BIGINT NOT NULL,
    FOREIGN KEY (case_id, epoch) REFERENCES key_epochs (case_id, epoch)
);
CREATE INDEX evidence_by_case ON evidence (case_id, committed_at);

CREATE TABLE upload_sessions (
    id TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    case_id TEXT NOT NULL REFERENCES cases (id),
    length BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    metadata BYTEA NOT NULL
);
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_at);

CREATE TABLE seen_nonces (
    keyid TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (keyid, nonce)
);
CREATE INDEX seen_nonces_by_expiry ON seen_nonces (expires_at);

CREATE TABLE audit_entries (
    idx BIGINT PRIMARY KEY,
    entry BYTEA NOT NULL,
    leaf_hash BYTEA NOT NULL
);

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

-- One row: the tree size, its frontier (full-subtree roots, 32 bytes each) and
-- the hash of the last entry (the next entry's prev).
CREATE TABLE audit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    frontier BYTEA NOT NULL,
    last_entry_hash BYTEA NOT NULL
);
INSERT INTO audit_state (id, size, frontier, last_entry_hash) VALUES (1, 0, ''::bytea, decode(repeat('00', 32), 'hex'));

CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    note BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
