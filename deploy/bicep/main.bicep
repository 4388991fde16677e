// Sheaf on Azure: everything one environment needs, in one resource group.
//
//   az deployment group create -g RG -f deploy/bicep/main.bicep \
//     -p deploy/bicep/main.parameters.json -p sqlEntraAdminLogin=... sqlEntraAdminObjectId=...
//
// Then `overlayEnv` (an output) becomes deploy/k8s/overlays/<env>/azure.env, and
// deploy/bicep/sql-grants.sql creates the database users (docs/deploy.md, in order).
// Nothing here holds a secret: Service Bus, Storage, Azure OpenAI, Azure SQL (and Document
// Intelligence, when ocrEngine chooses it) accept Entra ID only, and pods reach them through
// workload identity.
//
// No Bicep compiler runs in this project's CI: deploy/check.sh proves every file parses
// (checkov's Bicep parser) and checkov's policies pass. Keep to constructs it parses.
targetScope = 'resourceGroup'

@description('Azure region of everything except possibly Azure OpenAI.')
param location string = resourceGroup().location

@description('Environment name, part of every resource name.')
@allowed([
  'dev'
  'prod'
])
param environmentName string = 'prod'

@description('Short name of the application, part of every resource name.')
@maxLength(8)
param appName string = 'sheaf'

@description('Kubernetes namespace of the overlay (dev: sheaf-dev, prod: sheaf).')
param kubernetesNamespace string = 'sheaf'

@description('Service account of the API and workers (deploy/k8s/base/serviceaccounts.yaml).')
param appServiceAccount string = 'sheaf'

@description('Service account of the migration Job.')
param migratorServiceAccount string = 'sheaf-migrator'

@description('Namespace and service account of the KEDA operator (the AKS add-on\'s).')
param kedaOperatorNamespace string = 'kube-system'
param kedaOperatorServiceAccount string = 'keda-operator'

@description('Queue of wake-up messages; the same name as SHEAF_SERVICEBUS_QUEUE.')
param queueName string = 'documents'

@description('SHEAF_MAX_ATTEMPTS the deployment runs with (the queue\'s MaxDeliveryCount is 5x).')
@minValue(1)
param sheafMaxAttempts int = 3

@description('Service Bus message lock (Sheaf renews it while it works).')
param messageLockDuration string = 'PT1M'

@description('Service Bus duplicate detection window.')
param duplicateDetectionWindow string = 'PT10M'

@description('Blob container for the documents (SHEAF_AZURE_STORAGE_CONTAINER).')
param storageContainerName string = 'documents'

@description('Storage replication.')
param storageSku string = 'Standard_GZRS'

@description('Database name.')
param sqlDatabaseName string = 'sheaf'

@description('Most vCores of the serverless database.')
param sqlMaxVCores int = 2

@description('Display name of the Entra user or group that administers Azure SQL.')
param sqlEntraAdminLogin string

@description('Object id of that user or group.')
param sqlEntraAdminObjectId string

@allowed([
  'User'
  'Group'
  'Application'
])
param sqlEntraAdminPrincipalType string = 'Group'

@description('Region of the Azure OpenAI account (where the embedding model is offered).')
param openAiLocation string = location

@description('Embedding model and version; SHEAF_EMBEDDING_DIMENSIONS must suit it.')
param embeddingModelName string = 'text-embedding-3-large'
param embeddingModelVersion string = '1'

@description('Embedding deployment name (SHEAF_AZURE_OPENAI_DEPLOYMENT).')
param embeddingDeploymentName string = 'text-embedding-3-large'

@description('Embedding capacity in thousands of tokens per minute.')
param embeddingCapacity int = 120

@description('Embedding deployment type: Standard or GlobalStandard (where the model is offered).')
param embeddingSkuName string = 'Standard'

@description('SHEAF_OCR_ENGINE: azure-document-intelligence creates a Document Intelligence account.')
@allowed([
  'tesseract'
  'azure-document-intelligence'
])
param ocrEngine string = 'tesseract'

@description('Region of the Document Intelligence account (where its models are offered).')
param documentIntelligenceLocation string = location

@description('true: create an AKS cluster; false: use existingAksName in this resource group.')
param createAks bool = true

@description('Existing cluster (workload identity, OIDC issuer and KEDA already enabled).')
param existingAksName string = ''

@description('Kubernetes version of a new cluster; empty for the region default.')
param aksKubernetesVersion string = ''

@description('VM size of the new cluster\'s nodes.')
param aksVmSize string = 'Standard_D4ds_v5'

@description('Node counts of the new cluster.')
param aksSystemNodeCount int = 2
param aksAppsMinCount int = 2
param aksAppsMaxCount int = 10

@description('CIDR ranges allowed to reach the Kubernetes API; empty = any.')
param aksAuthorizedIpRanges array = []

@description('Days Log Analytics keeps logs.')
@minValue(30)
param logRetentionDays int = 30

param tags object = {
  application: 'sheaf'
}

var suffix = uniqueString(resourceGroup().id, environmentName)
var prefix = '${appName}-${environmentName}'

// -- Log Analytics (in this file: main.bicep declares resources of its own) ----------------------
resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${prefix}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource existingAks 'Microsoft.ContainerService/managedClusters@2024-05-01' existing = if (!createAks) {
  name: existingAksName
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  params: {
    location: location
    namePrefix: 'id-${prefix}'
    tags: tags
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    location: location
    namespaceName: 'sb-${prefix}-${suffix}'
    queueName: queueName
    sheafMaxAttempts: sheafMaxAttempts
    lockDuration: messageLockDuration
    duplicateDetectionWindow: duplicateDetectionWindow
    appPrincipalId: identities.outputs.appPrincipalId
    kedaPrincipalId: identities.outputs.kedaPrincipalId
    workspaceId: workspace.id
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    accountName: take('st${appName}${environmentName}${suffix}', 24)
    containerName: storageContainerName
    skuName: storageSku
    appPrincipalId: identities.outputs.appPrincipalId
    tags: tags
  }
}

module sql 'modules/sql.bicep' = {
  name: 'sql'
  params: {
    location: location
    serverName: 'sql-${prefix}-${suffix}'
    databaseName: sqlDatabaseName
    entraAdminLogin: sqlEntraAdminLogin
    entraAdminObjectId: sqlEntraAdminObjectId
    entraAdminPrincipalType: sqlEntraAdminPrincipalType
    maxVCores: sqlMaxVCores
    workspaceId: workspace.id
    tags: tags
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  params: {
    location: openAiLocation
    accountName: 'oai-${prefix}-${suffix}'
    deploymentName: embeddingDeploymentName
    modelName: embeddingModelName
    modelVersion: embeddingModelVersion
    capacity: embeddingCapacity
    skuName: embeddingSkuName
    appPrincipalId: identities.outputs.appPrincipalId
    workspaceId: workspace.id
    tags: tags
  }
}

var useDocumentIntelligence = ocrEngine == 'azure-document-intelligence'

module documentIntelligence 'modules/documentintelligence.bicep' = if (useDocumentIntelligence) {
  name: 'documentintelligence'
  params: {
    location: documentIntelligenceLocation
    accountName: 'di-${prefix}-${suffix}'
    appPrincipalId: identities.outputs.appPrincipalId
    workspaceId: workspace.id
    tags: tags
  }
}

module aks 'modules/aks.bicep' = if (createAks) {
  name: 'aks'
  params: {
    location: location
    clusterName: 'aks-${prefix}'
    kubernetesVersion: aksKubernetesVersion
    vmSize: aksVmSize
    systemNodeCount: aksSystemNodeCount
    appsMinCount: aksAppsMinCount
    appsMaxCount: aksAppsMaxCount
    authorizedIpRanges: aksAuthorizedIpRanges
    workspaceId: workspace.id
    tags: tags
  }
}

var oidcIssuerUrl = createAks ? aks.outputs.oidcIssuerUrl : existingAks.properties.oidcIssuerProfile.issuerURL
var kubeletObjectId = createAks ? aks.outputs.kubeletObjectId : existingAks.properties.identityProfile.kubeletidentity.objectId
var clusterName = createAks ? aks.outputs.clusterName : existingAks.name

module federation 'modules/federation.bicep' = {
  name: 'federation'
  params: {
    oidcIssuerUrl: oidcIssuerUrl
    namespace: kubernetesNamespace
    appIdentityName: identities.outputs.appName
    appServiceAccount: appServiceAccount
    migratorIdentityName: identities.outputs.migratorName
    migratorServiceAccount: migratorServiceAccount
    kedaIdentityName: identities.outputs.kedaName
    kedaOperatorNamespace: kedaOperatorNamespace
    kedaOperatorServiceAccount: kedaOperatorServiceAccount
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    registryName: take('cr${appName}${environmentName}${suffix}', 50)
    kubeletObjectId: kubeletObjectId
    tags: tags
  }
}

var databaseUrl = 'mssql+aioodbc://@${sql.outputs.serverFqdn}:1433/${sql.outputs.databaseName}?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes&TrustServerCertificate=no'

// -- outputs: what the Kubernetes overlay and the T-SQL script need -----------------------------
output clusterName string = clusterName
output registryLoginServer string = registry.outputs.loginServer
output sqlServerFqdn string = sql.outputs.serverFqdn
output sqlDatabaseName string = sql.outputs.databaseName
output appIdentityName string = identities.outputs.appName
output migratorIdentityName string = identities.outputs.migratorName
output kedaIdentityName string = identities.outputs.kedaName

// SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT when ocrEngine is azure-document-intelligence
// (empty otherwise): with SHEAF_OCR_ENGINE, it goes in the overlay's settings.env.
output documentIntelligenceEndpoint string = useDocumentIntelligence ? documentIntelligence.outputs.endpoint : ''

// deploy/k8s/overlays/<env>/azure.env, whole: the keys deploy/k8s/base/azure/kustomization.yaml
// copies into the ConfigMap, the service accounts, the TriggerAuthentication and the
// ScaledObject. IMAGE is added by hand after `az acr build` (docs/deploy.md).
output overlayEnv string = join([
  'SHEAF_DATABASE_URL=${databaseUrl}'
  'SHEAF_AZURE_STORAGE_ACCOUNT_URL=${storage.outputs.accountUrl}'
  'SHEAF_AZURE_STORAGE_CONTAINER=${storage.outputs.containerName}'
  'SHEAF_SERVICEBUS_NAMESPACE=${serviceBus.outputs.namespaceFqdn}'
  'SHEAF_SERVICEBUS_QUEUE=${serviceBus.outputs.queueName}'
  'SHEAF_AZURE_OPENAI_ENDPOINT=${openAi.outputs.endpoint}'
  'SHEAF_AZURE_OPENAI_DEPLOYMENT=${openAi.outputs.deploymentName}'
  'SERVICEBUS_NAMESPACE_NAME=${serviceBus.outputs.namespaceName}'
  'SQL_SERVER_FQDN=${sql.outputs.serverFqdn}'
  'SQL_DATABASE=${sql.outputs.databaseName}'
  'APP_CLIENT_ID=${identities.outputs.appClientId}'
  'MIGRATOR_CLIENT_ID=${identities.outputs.migratorClientId}'
  'KEDA_CLIENT_ID=${identities.outputs.kedaClientId}'
], '\n')
