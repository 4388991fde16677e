// Azure OpenAI account + the embedding deployment Sheaf calls (SHEAF_EMBEDDER=azure-openai).
// Keys are disabled: the app identity is a Cognitive Services OpenAI User.
@description('Region with the embedding model available (may differ from the cluster).')
param location string

@description('Account name; also its custom subdomain (Entra ID sign-in requires one).')
param accountName string

@description('Deployment name; SHEAF_AZURE_OPENAI_DEPLOYMENT.')
param deploymentName string

@description('Model, e.g. text-embedding-3-large.')
param modelName string

@description('Model version.')
param modelVersion string

@description('Capacity in thousands of tokens per minute.')
param capacity int

@description('Deployment type: Standard (in the region) or GlobalStandard, as the model offers.')
param skuName string = 'Standard'

@description('Principal of the app identity.')
param appPrincipalId string

@description('Log Analytics workspace for the account logs.')
param workspaceId string

param tags object = {}

var openAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134: no private network in this template; keys are disabled, Entra ID only
  name: accountName
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: accountName
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource embedding 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
  }
}

resource appEmbeds 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, appPrincipalId, openAiUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: account
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output endpoint string = account.properties.endpoint
output deploymentName string = embedding.name
