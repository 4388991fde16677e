// Azure AI Document Intelligence, the OCR service of SHEAF_OCR_ENGINE=azure-document-intelligence.
// Keys are disabled: the app identity (the workers) is a Cognitive Services User.
@description('Region offering the Document Intelligence models Sheaf calls (may differ from the cluster).')
param location string

@description('Account name; also its custom subdomain (Entra ID sign-in requires one).')
param accountName string

@description('Principal of the app identity.')
param appPrincipalId string

@description('Log Analytics workspace for the account logs.')
param workspaceId string

param tags object = {}

var cognitiveServicesUser = 'a97b65f3-24c7-4388-baec-2e87ef14e83b' // Cognitive Services User

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134: no private network in this template; keys are disabled, Entra ID only
  name: accountName
  location: location
  tags: tags
  kind: 'FormRecognizer'
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

resource appReads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, appPrincipalId, cognitiveServicesUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesUser)
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

// SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT: https://NAME.cognitiveservices.azure.com/
output endpoint string = account.properties.endpoint
