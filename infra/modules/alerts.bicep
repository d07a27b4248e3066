// Scheduled query (log search) alert rules over the app's telemetry events, platform metric alert rules on the
// hubs, their Event Grid system topics and DPS, and the action group they all notify.
// Queries: infra/monitoring/queries/alert-*.kql behind the shared views of events.kql.

@description('Region of the alert rules.')
param location string

@description('Tags of every resource.')
param tags object

@description('Application Insights component the rules query.')
param applicationInsightsName string

@description('Action group name.')
param actionGroupName string

@description('Name prefix of the alert rules.')
param alertRulePrefix string

@description('E-mail receiver of the alerts; empty creates the rules without a notification.')
param alertEmail string = ''

@description('Regional CA names whose CRLs must stay fresh.')
param caNames array

@description('Lifetime of every CRL in hours (CRL_VALIDITY_HOURS).')
param crlValidityHours int = 168

@description('The refresh timer re-issues a CRL when less than this many hours remain (CRL_REFRESH_BEFORE_HOURS).')
param crlRefreshBeforeHours int = 96

@description('Period of the CRL refresh timer in hours (cert_lifecycle refresh_crls: every 6 hours).')
param crlTimerHours int = 6

@description('Provisioning success target (fraction).')
param successTarget string = '0.95'

@description('Attempts needed in the window before the success rate is judged.')
param minAttempts int = 20

@description('Failures in 15 minutes above which the burst alert fires.')
param failureBurst int = 5

@description('IoT hub names (metric alerts: throttling).')
param hubNames array

@description('Event Grid system topic names whose dead-lettered events alert: the hubs\' (DeviceCreated) and the storage account\'s (template BlobCreated).')
param systemTopicNames array

@description('DPS name (metric alert: failed registrations).')
param dpsName string

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'onboarding'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operations'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var crlMinRemainingHours = crlRefreshBeforeHours - 2 * crlTimerHours
var queryParameters = 'let ExpectedCAs = dynamic(${string(caNames)});\nlet CrlSilence = ${2 * crlTimerHours}h;\nlet CrlMinRemainingHours = ${crlMinRemainingHours};\nlet CrlValidityHours = ${crlValidityHours};\nlet SuccessTarget = ${successTarget};\nlet MinAttempts = ${minAttempts};\nlet FailureBurst = ${failureBurst};\n'
var prelude = concat(queryParameters, loadTextContent('../monitoring/queries/events.kql'))

var rules = [
  {
    name: 'provisioning-success-rate'
    displayName: 'Provisioning success rate below target'
    description: 'Fewer than ${successTarget} of the DPS allocation attempts of the last hour succeeded.'
    severity: 1
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'PT1H'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-success-rate.kql'))
  }
  {
    name: 'provisioning-failure-burst'
    displayName: 'More than ${failureBurst} provisioning failures in 15 minutes'
    description: 'The allocation webhook refused more than ${failureBurst} devices in 15 minutes.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'PT15M'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-failure-burst.kql'))
  }
  {
    name: 'certificate-expiry'
    displayName: 'Device certificate within 30 days of expiry'
    description: 'The daily expiry scan found device certificates within 30 days of expiry or expired.'
    severity: 2
    evaluationFrequency: 'PT6H'
    windowSize: 'PT6H'
    overrideQueryTimeRange: 'P1D'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-certificate-expiry.kql'))
  }
  {
    name: 'twin-update-failures'
    displayName: 'Twin configuration failures'
    description: 'Twin setup marked at least one device failed in the last 15 minutes.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'PT15M'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-twin-failures.kql'))
  }
  {
    name: 'stuck-sensors'
    displayName: 'Sensors stuck in onboarding'
    description: 'The onboarding funnel flagged sensors that stayed in one stage past its limit in the last hour (their facility managers get a daily digest).'
    severity: 3
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'PT1H'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-stuck-sensors.kql'))
  }
  {
    name: 'crl-age'
    displayName: 'CRL older than its refresh interval'
    description: 'A regional CA CRL was not refreshed: no timer status for ${2 * crlTimerHours} hours, a failed refresh, or less than ${crlMinRemainingHours} hours before nextUpdate.'
    severity: 1
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    query: concat(prelude, loadTextContent('../monitoring/queries/alert-crl-age.kql'))
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${alertRulePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    overrideQueryTimeRange: (rule.overrideQueryTimeRange == rule.windowSize) ? null : rule.overrideQueryTimeRange
    scopes: [
      appInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

// --- platform metric alerts (Microsoft.Insights/metricAlerts 2018-03-01, as the Azure Verified Module
// avm/res/insights/metric-alert; location global; one rule per resource, since the hubs may be in different
// regions and a multi-resource rule needs one region). Metric names from "Supported metrics" (Azure Monitor
// reference) for each resource type.

resource hubRef 'Microsoft.Devices/IotHubs@2023-06-30' existing = [for hubName in hubNames: {
  name: hubName
}]

resource topicRef 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = [for topicName in systemTopicNames: {
  name: topicName
}]

resource dpsRef 'Microsoft.Devices/provisioningServices@2022-12-12' existing = {
  name: dpsName
}

var metricAlertBase = {
  evaluationFrequency: 'PT5M'
  windowSize: 'PT15M'
  autoMitigate: true
  enabled: true
  actions: [
    {
      actionGroupId: actionGroup.id
    }
  ]
}

// DeadLetteredCount (Microsoft.EventGrid/systemTopics, Total; dimensions EventSubscriptionName, DeadLetterReason;
// docs/contracts.md "Event Grid delivery"): an event Event Grid gave up on after its subscription's retries (30
// attempts or 24 hours) and wrote to the dead-letter container: a device twin setup never configured (DeviceCreated)
// or a template upload that started no rollout (BlobCreated).
resource deadLetterAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for (topicName, i) in systemTopicNames: {
  name: '${alertRulePrefix}-dead-letters-${topicName}'
  location: 'global'
  tags: tags
  properties: union(metricAlertBase, {
    description: 'Event Grid dead-lettered events of ${topicName} (container eventgrid-deadletter): DeviceCreated, a device twin setup did not configure; BlobCreated, a template upload that started no rollout.'
    severity: 1
    scopes: [
      topicRef[i].id
    ]
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
  })
}]

// d2c.telemetry.ingress.sendThrottle (Microsoft.Devices/IotHubs, "Number of throttling errors", Total): devices
// beyond the units' throughput. Throttled service calls of the app (twin updates) show in its own telemetry and
// the twin-update-failures rule above.
resource throttleAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for (hubName, i) in hubNames: {
  name: '${alertRulePrefix}-throttling-${hubName}'
  location: 'global'
  tags: tags
  properties: union(metricAlertBase, {
    description: 'IoT hub ${hubName} throttled device traffic: add units (iotHubUnits) or spread the load.'
    severity: 2
    scopes: [
      hubRef[i].id
    ]
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttling-errors'
          metricNamespace: 'Microsoft.Devices/IotHubs'
          metricName: 'd2c.telemetry.ingress.sendThrottle'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
  })
}]

// RegistrationAttempts (Microsoft.Devices/provisioningServices, Total, dimension Status): failed registrations at
// DPS, including the ones the webhook refused; above the same burst threshold as the log alert.
resource dpsFailureAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${alertRulePrefix}-dps-failures'
  location: 'global'
  tags: tags
  properties: union(metricAlertBase, {
    description: 'More than ${failureBurst} failed DPS registrations in 15 minutes.'
    severity: 2
    scopes: [
      dpsRef.id
    ]
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'failed-registrations'
          metricNamespace: 'Microsoft.Devices/provisioningServices'
          metricName: 'RegistrationAttempts'
          dimensions: [
            {
              name: 'Status'
              operator: 'Include'
              values: [
                'Failure'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: failureBurst
          timeAggregation: 'Total'
        }
      ]
    }
  })
}

output deadLetterAlertNames array = [for (topicName, i) in systemTopicNames: deadLetterAlerts[i].name]
output throttleAlertNames array = [for (hubName, i) in hubNames: throttleAlerts[i].name]
output dpsAlertName string = dpsFailureAlert.name
output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
output actionGroupId string = actionGroup.id
