-- Signed statements (issue 10): every trust-relevant change is a statement signed by the
-- participant(s) entitled to make it, stored verbatim (canonical JSON) and carried in its
-- audit entry. Chains: 'directory' and 'case:<id>'; seq numbers each chain from 0.
CREATE TABLE statements (
    chain TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    statement TEXT NOT NULL,
    audit_index BIGINT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE UNIQUE INDEX statements_by_index ON statements (audit_index);
