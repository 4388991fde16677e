// AKS with what Sheaf relies on: the OIDC issuer and workload identity (pods sign in as the
// identities of identities.bicep, no secrets), the KEDA add-on (queue-depth autoscaling of
// the workers), Azure network policies (deploy/k8s/base/networkpolicy.yaml), Entra ID with
// Azure RBAC for kubectl, and Container insights into Log Analytics.
@description('Azure region.')
param location string

@description('Cluster name.')
param clusterName string

@description('Kubernetes version; empty for the region default.')
param kubernetesVersion string = ''

@description('VM size of both pools: a local disk (ephemeral OS disk) and encryption at host.')
param vmSize string = 'Standard_D4ds_v5'

@description('Nodes of the system pool (cluster add-ons only).')
@minValue(1)
param systemNodeCount int = 2

@description('Fewest nodes of the apps pool (Sheaf).')
@minValue(1)
param appsMinCount int = 2

@description('Most nodes of the apps pool; the workers scale within it.')
param appsMaxCount int = 10

@description('CIDR ranges allowed to reach the Kubernetes API (your office, CI); empty = any.')
param authorizedIpRanges array = []

@description('Log Analytics workspace for Container insights.')
param workspaceId string

param tags object = {}

var zones = [
  '1'
  '2'
  '3'
]

resource cluster 'Microsoft.ContainerService/managedClusters@2024-05-01' = {
  // checkov:skip=CKV_AZURE_8: the dashboard add-on is retired on supported Kubernetes versions; nothing enables it
  // checkov:skip=CKV_AZURE_172: Sheaf holds no secrets, so the Secrets Store CSI driver is not installed
  name: clusterName
  location: location
  tags: tags
  sku: {
    name: 'Base'
    tier: 'Standard'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    dnsPrefix: clusterName
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
      tenantID: tenant().tenantId
    }
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
      imageCleaner: {
        enabled: true
        intervalHours: 168
      }
    }
    workloadAutoScalerProfile: {
      keda: {
        enabled: true
      }
    }
    autoUpgradeProfile: {
      upgradeChannel: 'stable'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    apiServerAccessProfile: {
      authorizedIPRanges: authorizedIpRanges
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      loadBalancerSku: 'standard'
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        count: systemNodeCount
        vmSize: vmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 64
        type: 'VirtualMachineScaleSets'
        maxPods: 50
        availabilityZones: zones
        enableEncryptionAtHost: true
        nodeTaints: [
          'CriticalAddonsOnly=true:NoSchedule'
        ]
      }
      {
        name: 'apps'
        mode: 'User'
        enableAutoScaling: true
        count: appsMinCount
        minCount: appsMinCount
        maxCount: appsMaxCount
        vmSize: vmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 64
        type: 'VirtualMachineScaleSets'
        maxPods: 50
        availabilityZones: zones
        enableEncryptionAtHost: true
      }
    ]
    addonProfiles: {
      omsagent: {
        enabled: true
        config: {
          logAnalyticsWorkspaceResourceID: workspaceId
        }
      }
      azurepolicy: {
        enabled: true
      }
    }
  }
}

output clusterName string = cluster.name
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
output kubeletObjectId string = cluster.properties.identityProfile.kubeletidentity.objectId
