-- Case events for the live feed (written in the operation's transaction, keyed by the
-- audit index of the entry that logged the event) and each participant's full public
-- bundle as last enrolled or re-keyed (the participants table keeps only some keys).
CREATE TABLE case_events (
    case_id TEXT NOT NULL REFERENCES cases (id),
    audit_index BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (case_id, audit_index)
);

CREATE TABLE participant_bundles (
    participant_id TEXT PRIMARY KEY REFERENCES participants (id),
    bundle TEXT NOT NULL,
    audit_index BIGINT NOT NULL
);
