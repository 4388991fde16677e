// Federated credentials: which Kubernetes service account may act as which identity.
// The tokens come from the AKS OIDC issuer; Azure accepts them for these subjects only.
// One credential per identity, so no two writes hit the same identity at once (Azure
// refuses concurrent federated-credential writes on one identity).
@description('OIDC issuer URL of the cluster (AKS: oidcIssuerProfile.issuerURL).')
param oidcIssuerUrl string

@description('Kubernetes namespace Sheaf runs in.')
param namespace string

param appIdentityName string
param appServiceAccount string
param migratorIdentityName string
param migratorServiceAccount string
param kedaIdentityName string

@description('Namespace of the KEDA operator (the AKS add-on installs it in kube-system).')
param kedaOperatorNamespace string

@description('Service account of the KEDA operator.')
param kedaOperatorServiceAccount string

var audiences = [
  'api://AzureADTokenExchange'
]

resource app 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: appIdentityName
}

resource migrator 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: migratorIdentityName
}

resource keda 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: kedaIdentityName
}

resource appFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: app
  name: 'kubernetes-${namespace}-${appServiceAccount}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${namespace}:${appServiceAccount}'
    audiences: audiences
  }
}

resource migratorFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: migrator
  name: 'kubernetes-${namespace}-${migratorServiceAccount}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${namespace}:${migratorServiceAccount}'
    audiences: audiences
  }
}

// KEDA authenticates as the operator's own service account and switches to this identity
// through TriggerAuthentication.spec.podIdentity.identityId (deploy/k8s/base/keda.yaml).
resource kedaFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: keda
  name: 'kubernetes-${kedaOperatorNamespace}-${kedaOperatorServiceAccount}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${kedaOperatorNamespace}:${kedaOperatorServiceAccount}'
    audiences: audiences
  }
}
