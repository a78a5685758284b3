-- Memberships get a surrogate key. The old primary key (case_id, participant_id,
-- added_at) made a participant removed and re-added within the same second collide
-- with their own history row (AlreadyExists). The rule stays: one active membership
-- per (case, participant), enforced by the partial unique index memberships_active;
-- removed rows are history.
ALTER TABLE memberships DROP CONSTRAINT memberships_pkey;
ALTER TABLE memberships ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE INDEX memberships_by_case ON memberships (case_id, added_at);
