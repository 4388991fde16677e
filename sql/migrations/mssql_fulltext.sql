-- SQL Server's keyword index (revision 0008): a full-text index on chunks.text.
-- CREATE FULLTEXT CATALOG and INDEX cannot run inside a user transaction, and the
-- migrations run as one; sql/migrations/env.py runs this batch after they commit, on an
-- autocommit connection, under the migrators' application lock. It is idempotent, and
-- does nothing where the server has no Full-Text Search (then search ranks keywords by a
-- scan instead: docs/search.md). CHANGE_TRACKING AUTO keeps the index in step with the
-- chunks in the background; search joins its matches to the live chunks, so a lagging
-- index can miss a new document for a moment but never shows a chunk that is not live.
IF
    CAST(FULLTEXTSERVICEPROPERTY('IsFullTextInstalled') AS INT) = 1
    AND NOT EXISTS (
        SELECT 1 FROM sys.fulltext_indexes
        WHERE object_id = OBJECT_ID(N'dbo.chunks')
    )
    BEGIN
        IF
            NOT EXISTS (
                SELECT 1 FROM sys.fulltext_catalogs
                WHERE name = N'sheaf_fulltext'
            )
            EXEC (N'CREATE FULLTEXT CATALOG sheaf_fulltext');
        DECLARE @key SYSNAME = (
            SELECT name FROM sys.indexes
            WHERE object_id = OBJECT_ID(N'dbo.chunks') AND is_primary_key = 1
        );
        -- The key index is the primary key, whose name the server chose: dynamic SQL.
        DECLARE
            @create NVARCHAR(MAX) = N'CREATE FULLTEXT INDEX ON dbo.chunks ([text] LANGUAGE 1033) '
            + N'KEY INDEX ' + QUOTENAME(@key) + N' ON sheaf_fulltext '
            + N'WITH CHANGE_TRACKING = AUTO, STOPLIST = SYSTEM';
        EXEC sp_executesql @create;
    END;
