// Three user-assigned identities, one per job, so each holds only what its job needs:
//   app      - the API and the workers: blobs, queue send/receive, embeddings, EXECUTE
//   migrator - the migration Job only: DDL on the database
//   keda     - the KEDA operator: reads the queue length and counts ready rows
// Role assignments are made next to the resources they grant (servicebus.bicep, ...);
// database permissions are T-SQL (../sql-grants.sql). Federated credentials, which need the
// cluster's OIDC issuer, are in federation.bicep.
@description('Azure region.')
param location string

@description('Prefix of the identity names, e.g. id-sheaf-prod.')
param namePrefix string

param tags object = {}

resource app 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-app'
  location: location
  tags: tags
}

resource migrator 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-migrator'
  location: location
  tags: tags
}

resource keda 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-keda'
  location: location
  tags: tags
}

output appName string = app.name
output appClientId string = app.properties.clientId
output appPrincipalId string = app.properties.principalId
output migratorName string = migrator.name
output migratorClientId string = migrator.properties.clientId
output migratorPrincipalId string = migrator.properties.principalId
output kedaName string = keda.name
output kedaClientId string = keda.properties.clientId
output kedaPrincipalId string = keda.properties.principalId
