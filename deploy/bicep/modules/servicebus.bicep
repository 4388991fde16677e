// Service Bus namespace and the queue of wake-up messages (shared/servicebus-wire.md).
// No shared access keys: every client signs in with Entra ID (disableLocalAuth).
@description('Azure region.')
param location string

@description('Namespace name (globally unique).')
param namespaceName string

@description('Queue of wake-up messages; SHEAF_SERVICEBUS_QUEUE and the KEDA trigger use it.')
param queueName string

@description('SHEAF_MAX_ATTEMPTS of the deployment: MaxDeliveryCount is 5 times it.')
@minValue(1)
param sheafMaxAttempts int

@description('Message lock; Sheaf renews it while a document is processed.')
param lockDuration string

@description('How long Service Bus remembers message ids to drop true duplicates.')
param duplicateDetectionWindow string

@description('Principal of the app identity: Data Sender and Data Receiver on the queue.')
param appPrincipalId string

@description('Principal of the KEDA identity: reads the queue length.')
param kedaPrincipalId string

@description('Log Analytics workspace for the namespace logs.')
param workspaceId string

param tags object = {}

var dataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39' // Azure Service Bus Data Sender
var dataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0' // Azure Service Bus Data Receiver
// KEDA reads the queue's runtime properties (active message count) through the management
// side of the data plane, which needs the Manage right: Data Owner, on this queue only.
var dataOwner = '090c5cfd-751d-490a-894a-3ce6f1109419' // Azure Service Bus Data Owner

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: lockDuration
    // ARCHITECTURE.md section 4: at least 5 x max_attempts, so Service Bus never
    // dead-letters a message the database still wants retried.
    maxDeliveryCount: 5 * sheafMaxAttempts
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false
    enablePartitioning: false
    enableBatchedOperations: true
    maxSizeInMegabytes: 1024
  }
}

resource appSends 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, appPrincipalId, dataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appReceives 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, appPrincipalId, dataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataReceiver)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource kedaReadsLength 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, kedaPrincipalId, dataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataOwner)
    principalId: kedaPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: namespace
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
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output namespaceName string = namespace.name
output namespaceFqdn string = '${namespace.name}.servicebus.windows.net'
output queueName string = queue.name
