-- Bootstrap: the database and the ledger of applied migrations. Not a migration
-- itself: migrate() runs it first, every time (each statement is IF NOT EXISTS).
--
-- Template fields, filled in by agentwatch before it runs the file (`agentwatch db ddl`
-- prints the result): database. Statements end with ';' at the end of a line.

CREATE DATABASE IF NOT EXISTS ${database};

-- One row per applied migration. Rows are inserted with
-- insert_deduplication_token = 'schema_migration:<version>', so two workers that
-- migrate at the same moment still leave one row per version.
CREATE TABLE IF NOT EXISTS ${database}.schema_migrations
(
    version    UInt32                  COMMENT 'Migration number (ddl/NNN_*.sql)',
    name       String                  COMMENT 'What the migration does',
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
SETTINGS non_replicated_deduplication_window = 1000;
