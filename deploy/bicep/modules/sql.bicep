// Azure SQL logical server + database, Microsoft Entra ID only: no SQL logins, no passwords.
// Users for the three identities and their permissions are T-SQL, run once by the Entra
// admin (../sql-grants.sql): Bicep cannot create database users.
@description('Azure region.')
param location string

@description('Logical server name (globally unique).')
param serverName string

@description('Database name.')
param databaseName string

@description('Display name of the Entra admin (a group is best: the platform team).')
param entraAdminLogin string

@description('Object id of that user or group.')
param entraAdminObjectId string

@allowed([
  'User'
  'Group'
  'Application'
])
param entraAdminPrincipalType string = 'Group'

@description('Most vCores of the serverless General Purpose database.')
param maxVCores int = 2

@description('Log Analytics workspace for auditing and database diagnostics.')
param workspaceId string

param tags object = {}

resource server 'Microsoft.Sql/servers@2023-08-01-preview' = {
  // checkov:skip=CKV_AZURE_113: no private network in this template; Entra-only sign-in and the Azure-only firewall rule guard it
  name: serverName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: entraAdminLogin
      sid: entraAdminObjectId
      principalType: entraAdminPrincipalType
      tenantId: tenant().tenantId
    }
  }
}

// AKS egress comes from Azure addresses that are not known in advance; this rule (0.0.0.0)
// admits Azure services only. Replace it with a private endpoint where the network allows.
resource allowAzure 'Microsoft.Sql/servers/firewallRules@2023-08-01-preview' = {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource database 'Microsoft.Sql/servers/databases@2023-08-01-preview' = {
  // checkov:skip=CKV_AZURE_23: auditing is on at the server (auditingSettings below), which covers every database
  // checkov:skip=CKV_AZURE_25: threat detection is on at the server (securityAlertPolicies below), no alert disabled
  // checkov:skip=CKV_AZURE_26: no mailbox is known to the template; alerts reach the subscription admins (CKV_AZURE_27) and Defender
  // checkov:skip=CKV_AZURE_27: emailAccountAdmins is set on the server's alert policy below; checkov looks for it nested in the database
  // checkov:skip=CKV_AZURE_229: zone redundancy depends on region and SKU; backups are zone-redundant
  parent: server
  name: databaseName
  location: location
  tags: tags
  sku: {
    name: 'GP_S_Gen5'
    tier: 'GeneralPurpose'
    family: 'Gen5'
    capacity: maxVCores
  }
  properties: {
    // KEDA counts ready rows every 15 seconds, so the database would never pause anyway.
    autoPauseDelay: -1
    collation: 'SQL_Latin1_General_CP1_CI_AS'
    zoneRedundant: false
    requestedBackupStorageRedundancy: 'Zone'
  }
}

resource auditing 'Microsoft.Sql/servers/auditingSettings@2023-08-01-preview' = {
  parent: server
  name: 'default'
  properties: {
    state: 'Enabled'
    isAzureMonitorTargetEnabled: true
    retentionDays: 90
  }
}

resource securityAlerts 'Microsoft.Sql/servers/securityAlertPolicies@2023-08-01-preview' = {
  parent: server
  name: 'Default'
  properties: {
    state: 'Enabled'
    emailAccountAdmins: true
    disabledAlerts: []
  }
}

// Server audit events reach Log Analytics through the master database's diagnostics.
resource master 'Microsoft.Sql/servers/databases@2023-08-01-preview' existing = {
  // checkov:skip=CKV_AZURE_23: a reference to the system database, which holds the server's audit diagnostics only
  // checkov:skip=CKV_AZURE_25: same reference; threat detection is configured on the server
  parent: server
  name: 'master'
}

resource auditToLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: master
  name: 'audit-to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'SQLSecurityAuditEvents'
        enabled: true
      }
    ]
  }
}

resource databaseDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: database
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Basic'
        enabled: true
      }
    ]
  }
}

output serverName string = server.name
output serverFqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
