// Azure Container Registry for the Sheaf image (`az acr build` builds it in Azure, so no
// local Docker is needed); the cluster's kubelet identity may pull, nothing may push
// anonymously, and there is no admin user.
@description('Azure region.')
param location string

@description('Registry name (globally unique, letters and digits).')
param registryName string

@description('Object id of the AKS kubelet identity: AcrPull.')
param kubeletObjectId string

param tags object = {}

var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d' // AcrPull

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_166: quarantine and content trust need the Premium tier; images come only from `az acr build`
  // checkov:skip=CKV_AZURE_139: `az acr build` and the cluster reach the registry publicly; pulls need AcrPull, pushes need Entra ID
  name: registryName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    policies: {
      retentionPolicy: {
        status: 'disabled'
      }
    }
  }
}

resource kubeletPulls 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: registry
  name: guid(registry.id, kubeletObjectId, acrPull)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: kubeletObjectId
    principalType: 'ServicePrincipal'
  }
}

output loginServer string = registry.properties.loginServer
