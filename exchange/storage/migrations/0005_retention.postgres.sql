-- Retention and erasure (issue 19 part 3). An erased item's row leaves 'evidence' (its
-- sealed manifest with it) for 'erasures', which keeps ids and hashes only: the log names
-- them, and a pull of an erased id must say when and why it went. 'deliveries' records the
-- first complete download of each item by each participant (the server's own view of the
-- log, used to enforce "until every intended recipient has pulled").
CREATE TABLE erasures (
    evidence_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    erased_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    policy TEXT,
    audit_index BIGINT NOT NULL,
    blob_deleted BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX erasures_by_case ON erasures (case_id, epoch);
CREATE TABLE deliveries (
    evidence_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    audit_index BIGINT NOT NULL,
    PRIMARY KEY (evidence_id, participant_id)
);
CREATE TABLE shredded_epochs (
    case_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    audit_index BIGINT NOT NULL,
    PRIMARY KEY (case_id, epoch)
);
