-- Memberships get a surrogate key. The old primary key (case_id, participant_id,
-- added_at) made a participant removed and re-added within the same second collide
-- with their own history row (AlreadyExists). The rule stays: one active membership
-- per (case, participant), enforced by the partial unique index memberships_active;
-- removed rows are history. SQLite cannot change a primary key, so the table is
-- rebuilt (no other table references it).
CREATE TABLE memberships_new (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    participant_id TEXT NOT NULL REFERENCES participants (id),
    role TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    removed_at INTEGER
) STRICT;
INSERT INTO memberships_new (case_id, participant_id, role, added_at, removed_at)
    SELECT case_id, participant_id, role, added_at, removed_at FROM memberships
    ORDER BY added_at, case_id, participant_id;
DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE UNIQUE INDEX memberships_active ON memberships (case_id, participant_id)
    WHERE removed_at IS NULL;
CREATE INDEX memberships_by_participant ON memberships (participant_id);
CREATE INDEX memberships_by_case ON memberships (case_id, added_at);
