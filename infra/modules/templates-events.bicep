// Template uploads start configuration rollouts (README "Configuration changes"): a system topic on the storage
// account delivers Microsoft.Storage.BlobCreated for `{templatesContainer}/{name}-sensor.json` to the function's
// Event Grid trigger on_template_changed (endpoint type AzureFunction: Event Grid resolves the function and its
// system key itself). Kept copies under versions/ end in `.json`, not `-sensor.json`, so they start nothing; the
// function checks the same. One delivery per event (a rollout is started per upload), retried for 24 hours, then
// dead-lettered to a blob container with the system topic's own identity (no storage key).
// Contract: docs/contracts.md 2.4 (Microsoft Learn "Azure Blob Storage as an Event Grid source": subject
// /blobServices/default/containers/{container}/blobs/{blob}; filters subjectBeginsWith / subjectEndsWith).
// Like device-events.bicep, deploy it after the function code is published (the function must exist).

@description('Location of the storage account (a system topic lives with its source).')
param location string

@description('Storage account holding the templates container.')
param storageAccountName string

@description('Templates container (TEMPLATES_CONTAINER).')
param templatesContainerName string = 'sensor-configurations'

@description('Function app name.')
param functionAppName string

@description('Event Grid triggered function (twin_setup).')
param functionName string = 'on_template_changed'

@description('Dead-letter container.')
param deadLetterContainerName string

@description('Delivery attempts before dead-lettering.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before dead-lettering (1440 = 24 hours, the Event Grid maximum).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Tags for the system topic.')
param tags object = {}

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// A storage account can have one system topic: this is it (no other module makes one for the account).
resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${storageAccountName}-events'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// The system topic writes dead-lettered events with its own identity.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, topic.id, storageBlobDataContributor)
  scope: storage
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource templateCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'template-created-to-${functionName}'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${templatesContainerName}/blobs/'
      subjectEndsWith: '-sensor.json'
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    deadLetterWriter
  ]
}

output systemTopicName string = topic.name
output subscriptionName string = templateCreated.name
