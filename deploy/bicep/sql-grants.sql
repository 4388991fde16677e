-- Database users and permissions for Sheaf's three identities. Bicep cannot create database
-- users, so a Microsoft Entra admin of the server runs this once per environment, with the
-- identity names from the deployment's outputs (docs/deploy.md):
--
--   sqlcmd -S SERVER.database.windows.net -d sheaf --authentication-method ActiveDirectoryDefault \
--     -v AppIdentity=id-sheaf-prod-app MigratorIdentity=id-sheaf-prod-migrator \
--        KedaIdentity=id-sheaf-prod-keda -i deploy/bicep/sql-grants.sql
--
-- Run it twice: before the first migration (it creates the users and the app's and the
-- migrator's rights) and again after it (KEDA's SELECT needs dbo.documents to exist). Every
-- statement checks first, so any further run changes nothing.
--
-- What each identity may do, and no more:
--   app      - read and write rows, EXECUTE the lease procedures (sql/procedures/mssql)
--   migrator - DDL (db_ddladmin) plus rows (Alembic's version table), default schema dbo
--   keda     - SELECT on dbo.documents: the mssql trigger counts ready rows
-- The $(Name) variables are sqlcmd's (-v); sqlfluff parses them as they are.

SET NOCOUNT ON;

IF
    NOT EXISTS (
        SELECT 1 FROM sys.database_principals
        WHERE name = N'$(AppIdentity)'
    )
    BEGIN
        CREATE USER [$(AppIdentity)] FROM EXTERNAL PROVIDER;
    END;

IF
    NOT EXISTS (
        SELECT 1 FROM sys.database_principals
        WHERE name = N'$(MigratorIdentity)'
    )
    BEGIN
        CREATE USER [$(MigratorIdentity)] FROM EXTERNAL PROVIDER WITH DEFAULT_SCHEMA = dbo;
    END;

IF
    NOT EXISTS (
        SELECT 1 FROM sys.database_principals
        WHERE name = N'$(KedaIdentity)'
    )
    BEGIN
        CREATE USER [$(KedaIdentity)] FROM EXTERNAL PROVIDER;
    END;

-- The migration checks SCHEMA_NAME() = 'dbo' (sql/migrations/versions/0001_initial.py).
ALTER USER [$(MigratorIdentity)] WITH DEFAULT_SCHEMA = dbo;

-- app: rows and procedures, nothing structural.
ALTER ROLE db_datareader ADD MEMBER [$(AppIdentity)];
ALTER ROLE db_datawriter ADD MEMBER [$(AppIdentity)];
GRANT EXECUTE ON SCHEMA::dbo TO [$(AppIdentity)];

-- migrator: tables, indexes and procedures, and the rows Alembic keeps.
ALTER ROLE db_ddladmin ADD MEMBER [$(MigratorIdentity)];
ALTER ROLE db_datareader ADD MEMBER [$(MigratorIdentity)];
ALTER ROLE db_datawriter ADD MEMBER [$(MigratorIdentity)];

-- keda: one table, read only. It exists once the migration Job has run.
IF OBJECT_ID(N'dbo.documents', N'U') IS NOT NULL
    BEGIN
        GRANT SELECT ON OBJECT::dbo.documents TO [$(KedaIdentity)];
        PRINT 'KEDA may now count ready rows in dbo.documents.';
    END
ELSE
    BEGIN
        PRINT 'dbo.documents does not exist yet: run this script again after the migration Job.';
    END;
