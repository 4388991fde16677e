// Blob Storage for the uploaded originals: one private container used only by Sheaf.
// No shared keys (allowSharedKeyAccess: false): the app signs in with Entra ID.
@description('Azure region.')
param location string

@description('Storage account name (globally unique, 3-24 lower-case letters and digits).')
param accountName string

@description('Container for the documents; SHEAF_AZURE_STORAGE_CONTAINER.')
param containerName string

@description('Replication: GZRS keeps the originals through a zone and a region outage.')
param skuName string = 'Standard_GZRS'

@description('Principal of the app identity: Storage Blob Data Contributor on the container.')
param appPrincipalId string

param tags object = {}

var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no private network in this template; Entra-only sign-in guards the data
  // checkov:skip=CKV_AZURE_59: same: AKS reaches the account over its public endpoint (add a private endpoint to close it)
  // checkov:skip=CKV_AZURE_206: replication is the skuName parameter (main: Standard_GZRS), which checkov cannot resolve
  // checkov:skip=CKV_AZURE_43: the name is computed (uniqueString); checkov cannot check it
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource appWritesBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: container
  name: guid(container.id, appPrincipalId, blobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output accountName string = account.name
output accountUrl string = 'https://${account.name}.blob.${environment().suffixes.storage}'
output containerName string = container.name
