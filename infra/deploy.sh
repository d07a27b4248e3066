#!/usr/bin/env bash
# Deploy the sensor onboarding product into your own Azure subscription with the Azure CLI only.
#
#   infra/deploy.sh -e <environment> -l <azure-region> [options]     deploy (safe to run again)
#   infra/deploy.sh -e <environment> -l <azure-region> --what-if     print the plan, change nothing
#   infra/deploy.sh -e <environment> --rotate-ca <region>             CA rotation, stage 1 (docs/ca-rotation.md)
#   infra/deploy.sh -e <environment> --promote-ca <region>            CA rotation, stage 2
#
# Steps: preflight (login, azure-iot extension, names) -> Bicep (infra/main.bicep) -> code package (zip,
# remote build) -> DeviceCreated Event Grid subscriptions -> SQL migrations, database user, hubs, facilities ->
# sample templates -> regional CA certificates in Key Vault (and the app's signing role on each CA key) -> CAs
# verified in DPS -> DPS enrollment groups (custom allocation to the webhook, with its function key) -> first CRLs
# -> smoke check of /api/health. Every step looks before it acts, so a second run changes nothing in place.
#
# Parameters of main.bicep have one source of truth, shared with `azd up`: infra/main.parameters.json names the
# environment variable behind each one ("${ALERT_EMAIL=}"). The script resolves each the same way azd does, and
# never replaces a value it was given: an option of this script, else the variable in the environment (azd exports
# its environment's values to its hooks), else the azd environment's value (`azd env get-values`, when azd and
# that environment exist), else the file's default.
#
# Needs: az (logged in) with the azure-iot extension, zip (or python3), and for the SQL step go-sqlcmd
# (https://github.com/microsoft/go-sqlcmd; Cloud Shell has it). openssl only with --sign-with-root.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly TEMPLATE="${SCRIPT_DIR}/main.bicep"
readonly DPS_WEBHOOK_API_VERSION="2021-10-01"
# The deployable app: function_app.py, its blueprints and shared/. Never local/, tests/, bench/ or .local/.
readonly PACKAGE_PATHS=(function_app.py host.json requirements.txt allocation twin_setup cert_lifecycle health capacity funnel shared)
readonly POLL_SECONDS="${DEPLOY_POLL_SECONDS:-10}"
readonly POLL_ATTEMPTS="${DEPLOY_POLL_ATTEMPTS:-30}"

readonly PARAMETERS_FILE="${SCRIPT_DIR}/main.parameters.json"
readonly MIGRATIONS_DIR="${DEPLOY_MIGRATIONS_DIR:-${SCRIPT_DIR}/sql/migrations}"
# Built-in role "Key Vault Crypto User" (Azure built-in roles): sign with a key. Assigned per CA key, see setup_cas.
readonly KEY_VAULT_CRYPTO_USER_ROLE="12338af0-0e69-4776-bea7-57ae8d297424"

ENV_NAME="${AZURE_ENV_NAME:-}"
LOCATION="${AZURE_LOCATION:-}"
RESOURCE_GROUP_NAME=""
WHAT_IF=false
declare -A GIVEN=()            # environment variable of a parameter -> value given as an option of this script
declare -A AZD_VALUES=()       # the azd environment's values (azd env get-values)
declare -A PARAMETER=()        # main.bicep parameter -> resolved value
PARAMETER_ORDER=()
EXTRA_PARAMETERS=()            # -p NAME=VALUE for parameters main.parameters.json does not bind
CA_DIR=""""
ROOT_CERT=""
ROOT_KEY=""
FACILITIES_CSV=""
HUB_MAX_DEVICES=100000
HUB_DAILY_MESSAGES_PER_UNIT=400000
OVERWRITE_TEMPLATES=false
CA_ACTION=""                   # rotate | promote: a CA rotation stage instead of a deployment (docs/ca-rotation.md)
CA_REGION=""

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh -e ENV -l LOCATION [options]
       infra/deploy.sh -e ENV --rotate-ca REGION [--sign-with-root CERT KEY] [--ca-dir DIR] [--what-if]
       infra/deploy.sh -e ENV --promote-ca REGION [--what-if]

  -e, --environment NAME     environment name (resource names derive from it; default $AZURE_ENV_NAME)
  -l, --location REGION      Azure region, e.g. westeurope (default $AZURE_LOCATION)
  -g, --resource-group NAME  resource group (default rg-ENV)
      --what-if              print the plan (az deployment what-if and every later step); change nothing
      --alert-email ADDRESS  e-mail receiver of the Azure Monitor alerts ('' for none)      [ALERT_EMAIL]
      --enable-email         create Azure Communication Services e-mail for certificate alerts [ENABLE_EMAIL]
      --disable-email        no Communication Services e-mail                                 [ENABLE_EMAIL]
      --always-ready N       always-ready instances of the HTTP functions              [ALWAYS_READY_INSTANCES]
      --hubs-per-region N    IoT hubs in each facility region (1-16; the first keeps its name) [HUBS_PER_REGION]
      --private-network      VNet, private endpoints, no public access to Key Vault, SQL, Storage [VNET_ENABLED]
      --sql-admin-name NAME  display name of the SQL Entra administrator (you)           [AZURE_PRINCIPAL_NAME]
  -p, --parameter NAME=VALUE any parameter of infra/main.bicep (e.g. -p vnetEnabled=true)
      --ca-dir DIR           where CA CSRs are written and signed CA certificates are read (default .azure/ENV/ca)
      --sign-with-root CERT KEY
                             sign the CA CSRs with this root (openssl; for evaluation: a production root stays offline)
      --facilities FILE      CSV facility_code,name,region,manager_email to load into SQL (existing rows kept)
      --hub-max-devices N    capacity of each hub in iot_hubs (default 100000)
      --overwrite-templates  upload the sample templates even where a template already exists
  -h, --help                 this text

CA rotation (docs/ca-rotation.md), run instead of a deployment, on an environment already deployed (-l not needed):
      --rotate-ca REGION     stage 1: a new version, with a new key, of Key Vault certificate intermediate-ca-REGION
                             (its CSR is written to --ca-dir; merged by the run after the offline root has signed it,
                             at once with --sign-with-root), registered verified in DPS as intermediate-ca-REGION-YYYYMMDD (the new
                             certificate's notBefore) and set as the SECONDARY CA of enrollment group sensors-REGION.
                             Devices of both CA versions provision. Safe to run again: a done rotation is left as it is
      --promote-ca REGION    stage 2, once every certificate of the old CA version has expired or been renewed: the
                             group's secondary CA becomes its primary and the secondary is removed

Parameters: an option above wins; else the [VARIABLE] of infra/main.parameters.json from the environment (azd
exports its environment's values to hooks; or export it yourself); else `azd env get-values` of environment ENV
when azd is installed; else the default in infra/main.parameters.json. What is not given is never taken from an
earlier run: give the same options again, or keep the values in the environment (e.g. azd env set ALERT_EMAIL ...).
EOF
}

log() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  printf 'ERROR: %s\n' "$*" >&2
  exit "$code"
}

# A command that changes something: printed, and skipped under --what-if. The line goes to fd 3 (the
# script's stdout), so it shows even where the command's own output is captured or discarded.
exec 3>&1
mutate() {
  if [[ "${WHAT_IF}" == true ]]; then
    printf '    [what-if] would run: %s\n' "$(redact "$*")" >&3
    return 0
  fi
  printf '    + %s\n' "$(redact "$*")" >&3
  "$@"
}

# Function keys never reach the console.
redact() { sed -E 's/(code=|x-functions-key=)[^ &"]+/\1***/g' <<<"$*"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -e | --environment) ENV_NAME="${2:?}"; shift 2 ;;
      -l | --location) LOCATION="${2:?}"; shift 2 ;;
      -g | --resource-group) RESOURCE_GROUP_NAME="${2:?}"; shift 2 ;;
      --what-if) WHAT_IF=true; shift ;;
      --alert-email) GIVEN[ALERT_EMAIL]="${2?}"; shift 2 ;;
      --enable-email) GIVEN[ENABLE_EMAIL]=true; shift ;;
      --disable-email) GIVEN[ENABLE_EMAIL]=false; shift ;;
      --always-ready) GIVEN[ALWAYS_READY_INSTANCES]="${2:?}"; shift 2 ;;
      --hubs-per-region) GIVEN[HUBS_PER_REGION]="${2:?}"; shift 2 ;;
      --private-network) GIVEN[VNET_ENABLED]=true; shift ;;
      --sql-admin-name) GIVEN[AZURE_PRINCIPAL_NAME]="${2:?}"; shift 2 ;;
      -p | --parameter) given_parameter "${2:?}"; shift 2 ;;
      --ca-dir) CA_DIR="${2:?}"; shift 2 ;;
      --sign-with-root) ROOT_CERT="${2:?}"; ROOT_KEY="${3:?}"; shift 3 ;;
      --facilities) FACILITIES_CSV="${2:?}"; shift 2 ;;
      --hub-max-devices) HUB_MAX_DEVICES="${2:?}"; shift 2 ;;
      --overwrite-templates) OVERWRITE_TEMPLATES=true; shift ;;
      --rotate-ca) ca_action rotate "${2:?}"; shift 2 ;;
      --promote-ca) ca_action promote "${2:?}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die 64 "unknown option $1" ;;
    esac
  done
  [[ -n "${ENV_NAME}" ]] || { usage >&2; die 64 "an environment name is required (-e)"; }
  [[ -n "${LOCATION}" || -n "${CA_ACTION}" ]] || { usage >&2; die 64 "a location is required (-l)"; }
  [[ "${ENV_NAME}" =~ ^[a-zA-Z0-9-]{1,64}$ ]] || die 64 "environment name: letters, digits and '-' only"
  [[ "${HUB_MAX_DEVICES}" =~ ^[0-9]+$ ]] || die 64 "--hub-max-devices must be a number"
  [[ "${GIVEN[ALWAYS_READY_INSTANCES]:-0}" =~ ^[0-9]+$ ]] || die 64 "--always-ready must be a number"
  [[ "${GIVEN[HUBS_PER_REGION]:-1}" =~ ^[1-9][0-9]*$ ]] || die 64 "--hubs-per-region must be a number from 1"
  DEPLOYMENT_NAME="onboarding-${ENV_NAME}"
  CA_DIR="${CA_DIR:-${REPO_ROOT}/.azure/${ENV_NAME}/ca}"
}

# --rotate-ca / --promote-ca REGION: one CA rotation stage per run.
ca_action() {
  [[ -z "${CA_ACTION}" ]] || die 64 "--rotate-ca and --promote-ca: one stage per run"
  [[ "$2" =~ ^[a-z0-9-]{1,32}$ ]] || die 64 "--${1}-ca: a region name such as west, got '$2'"
  CA_ACTION=$1
  CA_REGION=$2
}

# --- preflight ------------------------------------------------------------------------------------------------

# True when the dotted version $1 is at least $2 (a pre-release suffix such as "b1" is ignored).
version_at_least() {
  local have=() want=() i
  IFS=. read -r -a have <<<"${1%%[!0-9.]*}"
  IFS=. read -r -a want <<<"$2"
  for i in 0 1 2; do
    ((10#${have[i]:-0} > 10#${want[i]:-0})) && return 0
    ((10#${have[i]:-0} < 10#${want[i]:-0})) && return 1
  done
  return 0
}

preflight() {
  log "Preflight"
  command -v az >/dev/null 2>&1 || die 2 "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
  local account iot_version
  # A list holding one list: one tab-separated row (see "-o tsv" at read_outputs).
  if ! account="$(az account show --query "[[id, user.name, user.type]]" -o tsv 2>/dev/null)"; then
    die 2 "not logged in to Azure: run 'az login' (and 'az account set --subscription <id>')"
  fi
  IFS=$'\t' read -r SUBSCRIPTION_ID PRINCIPAL_NAME PRINCIPAL_KIND <<<"${account}"
  note "subscription ${SUBSCRIPTION_ID} as ${PRINCIPAL_NAME} (${PRINCIPAL_KIND})"
  if ! iot_version="$(az extension show --name azure-iot --query version -o tsv 2>/dev/null)"; then
    die 3 "the azure-iot CLI extension is missing (DPS enrollment groups and certificates need it): run 'az extension add --name azure-iot'"
  fi
  # The enrollment groups pass one hub per argument to --iot-hubs, a list since 0.24.0 (a single string before).
  if ! version_at_least "${iot_version}" 0.24.0; then
    die 3 "the azure-iot CLI extension ${iot_version} is older than 0.24.0, which this script needs: run 'az extension update --name azure-iot'"
  fi
  if [[ "${PRINCIPAL_KIND}" == "servicePrincipal" ]]; then
    PRINCIPAL_TYPE="ServicePrincipal"
    PRINCIPAL_ID="$(az ad sp show --id "${PRINCIPAL_NAME}" --query id -o tsv)"
  else
    PRINCIPAL_TYPE="User"
    PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"
  fi
  [[ -n "${PRINCIPAL_ID}" ]] || die 2 "could not resolve the object id of ${PRINCIPAL_NAME}"
  if [[ "${WHAT_IF}" != true && -z "${CA_ACTION}" ]] && ! command -v sqlcmd >/dev/null 2>&1; then
    die 5 "sqlcmd (go-sqlcmd) is needed to create the database schema and user: https://learn.microsoft.com/sql/tools/sqlcmd/go-sqlcmd-utility"
  fi
  if [[ -n "${ROOT_CERT}" ]]; then
    [[ -r "${ROOT_CERT}" && -r "${ROOT_KEY}" ]] || die 64 "--sign-with-root: cannot read ${ROOT_CERT} / ${ROOT_KEY}"
    command -v openssl >/dev/null 2>&1 || die 5 "--sign-with-root needs openssl"
  fi
  if [[ -n "${FACILITIES_CSV}" && ! -r "${FACILITIES_CSV}" ]]; then
    die 64 "--facilities: cannot read ${FACILITIES_CSV}"
  fi
  migration_files >/dev/null  # a misnamed migration stops the script here, before any change
}

# --- names and outputs ----------------------------------------------------------------------------------------

readonly OUTPUT_NAMES=(AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME SERVICE_ONBOARDING_BASE_URL FUNCTION_PRINCIPAL_ID
  AZURE_STORAGE_ACCOUNT_NAME TEMPLATES_CONTAINER CRL_CONTAINER AZURE_KEY_VAULT_NAME AZURE_SQL_SERVER_NAME
  AZURE_SQL_SERVER_FQDN AZURE_SQL_DATABASE_NAME AZURE_DPS_NAME REGIONS IOT_HUB_HOSTNAMES DEVICE_CREATED_SUBSCRIBED
  AZURE_VNET_NAME IOT_HUB_REGIONS)

for _name in "${OUTPUT_NAMES[@]}"; do printf -v "${_name}" '%s' ""; done
unset _name

# `-o tsv` (knack's TSV output, which azure-cli uses) prints a list one item per line: "[a.value, b.value]" would be
# one output per line. The outputs are asked for as a list holding one list, "[[a.value, b.value]]": one row, its
# values tab-separated (a missing output prints as None, a bool as True/False).
outputs_query() {
  local fields=() name
  for name in "${OUTPUT_NAMES[@]}"; do fields+=("${name}.value"); done
  local joined
  joined="$(IFS=,; echo "${fields[*]}")"
  printf 'properties.outputs.[[%s]]' "${joined// /}"
}

# Reads the outputs of a deployment result (one row, tab-separated, in OUTPUT_NAMES order) into shell variables. The
# row is split at every tab (an empty output keeps its place: `read` with IFS=tab would merge adjacent tabs), and
# a result that is not one row of exactly that many values stops the script instead of shifting values into the
# wrong names.
read_outputs() {
  local row=$1 name value rest count=${#OUTPUT_NAMES[@]} tabs
  tabs="${row//[!$'\t']/}"
  if [[ "${row}" == *$'\n'* || ${#tabs} -ne $((count - 1)) ]]; then
    die 1 "the outputs of deployment ${DEPLOYMENT_NAME} are not one row of ${count} tab-separated values: $(head -c 300 <<<"${row}")"
  fi
  rest="${row}"
  for name in "${OUTPUT_NAMES[@]}"; do
    value="${rest%%$'\t'*}"
    rest="${rest#*$'\t'}"
    [[ "${value}" == "None" ]] && value=""
    printf -v "${name}" '%s' "${value}"
  done
}

# HUB_REGION[host] = the facility region of each IoT hub, from the deployment's IOT_HUB_REGIONS (host=region,...).
declare -A HUB_REGION=()
read_hub_regions() {
  local entries=() entry
  HUB_REGION=()
  IFS=, read -r -a entries <<<"${IOT_HUB_REGIONS:-}"
  for entry in "${entries[@]}"; do
    [[ "${entry}" == ?*=?* ]] || die 1 "deployment ${DEPLOYMENT_NAME}: IOT_HUB_REGIONS entry '${entry}' is not host=region"
    HUB_REGION[${entry%%=*}]="${entry#*=}"
  done
}

previous_outputs() {
  local line
  if line="$(az deployment sub show --name "${DEPLOYMENT_NAME}" --query "$(outputs_query)" -o tsv 2>/dev/null)" && [[ -n "${line}" ]]; then
    read_outputs "${line}"
    return 0
  fi
  return 1
}

# --- parameters: one source of truth with azd (infra/main.parameters.json) -----------------------------------

# Each parameter main.parameters.json binds, one per line: NAME|VARIABLE|=DEFAULT (the third field empty
# when "${VARIABLE}" has no default). The file's shape is checked by tests/infra/test_parameters.py.
parameter_bindings() {
  tr -d '\n\r' <"${PARAMETERS_FILE}" |
    grep -oE '"[A-Za-z][A-Za-z0-9]*"[[:space:]]*:[[:space:]]*[{][[:space:]]*"value"[[:space:]]*:[[:space:]]*"[$][{][A-Z][A-Z0-9_]*(=[^}"]*)?[}]"' |
    sed -E 's/^"([A-Za-z0-9]+)".*"[$][{]([A-Z0-9_]+)(=[^}"]*)?[}]"$/\1|\2|\3/'
}

binding_variable() { parameter_bindings | awk -F '|' -v name="$1" '$1 == name { print $2 }'; }

# -p NAME=VALUE: a parameter bound in main.parameters.json is given through its variable, so azd and this script
# agree on where it comes from; any other parameter of main.bicep is passed as it is.
given_parameter() {
  local name="${1%%=*}" value="${1#*=}" variable
  [[ "$1" == *=* && "${name}" =~ ^[A-Za-z][A-Za-z0-9]*$ ]] || die 64 "-p takes NAME=VALUE, got '$1'"
  case "${name}" in
    environmentName | location) die 64 "-p ${name}: use -e / -l" ;;
    subscribeDeviceCreated | resourceGroupName) die 64 "-p ${name}: the script sets it (resourceGroupName: -g)" ;;
  esac
  variable="$(binding_variable "${name}")"
  if [[ -n "${variable}" ]]; then
    GIVEN[${variable}]="${value}"
  else
    EXTRA_PARAMETERS+=("${name}=${value}")
  fi
}

# The azd environment of the same name, when azd is installed and has one (KEY="value" lines, dotenv quoting).
load_azd_environment() {
  AZD_VALUES=()
  command -v azd >/dev/null 2>&1 || return 0
  local values line value
  values="$(cd "${REPO_ROOT}" && azd env get-values --environment "${ENV_NAME}" 2>/dev/null)" || return 0
  while IFS= read -r line; do
    if [[ "${line}" =~ ^([A-Za-z_][A-Za-z0-9_]*)=\"(.*)\"$ ]]; then
      value="${BASH_REMATCH[2]}"
      value="${value//\\\"/\"}"
      AZD_VALUES[${BASH_REMATCH[1]}]="${value//\\\\/\\}"
    elif [[ "${line}" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      AZD_VALUES[${BASH_REMATCH[1]}]="${BASH_REMATCH[2]}"
    fi
  done <<<"${values}"
  note "azd environment ${ENV_NAME}: ${#AZD_VALUES[@]} value(s)"
}

# The value of a parameter's variable and where it came from: option > environment > azd environment > default.
RESOLVED_VALUE=""
RESOLVED_FROM=""
resolve_variable() {
  local variable=$1 default=$2
  if [[ -v "GIVEN[${variable}]" ]]; then
    RESOLVED_VALUE="${GIVEN[${variable}]}"; RESOLVED_FROM="option"
  elif [[ -v "${variable}" ]]; then
    RESOLVED_VALUE="${!variable}"; RESOLVED_FROM="\$${variable}"
  elif [[ -v "AZD_VALUES[${variable}]" ]]; then
    RESOLVED_VALUE="${AZD_VALUES[${variable}]}"; RESOLVED_FROM="azd env ${variable}"
  elif [[ "${default}" == =* ]]; then
    RESOLVED_VALUE="${default#=}"; RESOLVED_FROM="default"
  else
    RESOLVED_VALUE=""; RESOLVED_FROM=""
    return 1
  fi
}

resolve_parameters() {
  load_azd_environment
  local name variable default shown=()
  PARAMETER_ORDER=()
  while IFS='|' read -r name variable default; do
    case "${name}" in
      environmentName) RESOLVED_VALUE="${ENV_NAME}"; RESOLVED_FROM="-e" ;;
      location) RESOLVED_VALUE="${LOCATION}"; RESOLVED_FROM="-l" ;;
      subscribeDeviceCreated) continue ;;  # decided by the script for each deployment (see plan)
      principalId | principalType)
        # Given (azd sets AZURE_PRINCIPAL_ID) or, failing that, the signed-in principal: not the file's default.
        if ! resolve_variable "${variable}" "" || [[ -z "${RESOLVED_VALUE}" ]]; then
          RESOLVED_FROM="az login"
          if [[ "${name}" == principalId ]]; then RESOLVED_VALUE="${PRINCIPAL_ID}"; else RESOLVED_VALUE="${PRINCIPAL_TYPE}"; fi
        fi
        ;;
      *) resolve_variable "${variable}" "${default}" || die 64 "parameter ${name}: set ${variable} (infra/main.parameters.json gives no default)" ;;
    esac
    PARAMETER[${name}]="${RESOLVED_VALUE}"
    PARAMETER_ORDER+=("${name}")
    shown+=("${name}=${RESOLVED_VALUE} (${RESOLVED_FROM})")
  done < <(parameter_bindings)
  [[ ${#PARAMETER_ORDER[@]} -gt 0 ]] || die 1 "no parameter binding read from ${PARAMETERS_FILE}"
  [[ "${PARAMETER[alwaysReadyInstances]:-0}" =~ ^[0-9]+$ ]] || die 64 "alwaysReadyInstances must be a number, got '${PARAMETER[alwaysReadyInstances]}'"
  [[ "${PARAMETER[hubsPerRegion]:-1}" =~ ^[1-9][0-9]*$ ]] || die 64 "hubsPerRegion must be a number from 1, got '${PARAMETER[hubsPerRegion]}'"
  log "Parameters (option > environment > azd environment > infra/main.parameters.json)"
  printf '    %s\n' "${shown[@]}" "${EXTRA_PARAMETERS[@]}"
}

deployment_parameters() {
  local subscribe=$1 name
  for name in "${PARAMETER_ORDER[@]}"; do
    printf '%s\n' "${name}=${PARAMETER[${name}]}"
  done
  printf '%s\n' "subscribeDeviceCreated=${subscribe}" "resourceGroupName=${RESOURCE_GROUP_NAME}"
  if [[ ${#EXTRA_PARAMETERS[@]} -gt 0 ]]; then printf '%s\n' "${EXTRA_PARAMETERS[@]}"; fi
}

private_network() { [[ "${PARAMETER[vnetEnabled]:-false}" == true ]]; }

FUNCTIONS=""

# The functions the deployed app has indexed (bare names, one per line), read again by refresh_functions.
refresh_functions() {
  FUNCTIONS=""
  [[ -n "${AZURE_RESOURCE_GROUP}" && -n "${AZURE_FUNCTION_APP_NAME}" ]] || return 0
  FUNCTIONS="$(az functionapp function list --resource-group "${AZURE_RESOURCE_GROUP}" --name "${AZURE_FUNCTION_APP_NAME}" \
    --query "[].name" -o tsv 2>/dev/null | sed 's#.*/##' || true)"
}

has_function() { grep -qx "$1" <<<"${FUNCTIONS}"; }

# --- plan: what-if and name collisions -----------------------------------------------------------------------

# checkNameAvailability of the providers whose names are global (api-version, body type, result field).
check_name() {
  local type=$1 name=$2 url body field available
  local base="https://management.azure.com/subscriptions/${SUBSCRIPTION_ID}/providers"
  case "${type,,}" in
    microsoft.storage/storageaccounts)
      available="$(az storage account check-name --name "${name}" --query nameAvailable -o tsv)" ;;
    microsoft.keyvault/vaults)
      url="${base}/Microsoft.KeyVault/checkNameAvailability?api-version=2023-07-01"
      body="{\"name\": \"${name}\", \"type\": \"Microsoft.KeyVault/vaults\"}"; field=nameAvailable ;;
    microsoft.web/sites)
      url="${base}/Microsoft.Web/checknameavailability?api-version=2023-12-01"
      body="{\"name\": \"${name}\", \"type\": \"Microsoft.Web/sites\"}"; field=nameAvailable ;;
    microsoft.sql/servers)
      url="${base}/Microsoft.Sql/checkNameAvailability?api-version=2021-11-01"
      body="{\"name\": \"${name}\", \"type\": \"Microsoft.Sql/servers\"}"; field=available ;;
    microsoft.devices/iothubs)
      url="${base}/Microsoft.Devices/checkNameAvailability?api-version=2023-06-30"
      body="{\"name\": \"${name}\"}"; field=nameAvailable ;;
    microsoft.devices/provisioningservices)
      url="${base}/Microsoft.Devices/checkProvisioningServiceNameAvailability?api-version=2022-12-12"
      body="{\"name\": \"${name}\"}"; field=nameAvailable ;;
    microsoft.communication/communicationservices)
      url="${base}/Microsoft.Communication/checkNameAvailability?api-version=2023-04-01"
      body="{\"name\": \"${name}\", \"type\": \"Microsoft.Communication/CommunicationServices\"}"; field=nameAvailable ;;
    *) return 0 ;;
  esac
  if [[ -n "${url:-}" ]]; then
    available="$(az rest --method post --url "${url}" --body "${body}" --query "${field}" -o tsv)"
  fi
  if [[ "${available,,}" != "true" ]]; then
    die 4 "name collision: ${type} '${name}' is already taken in Azure. Choose another environment name (-e), or delete the resource that holds it."
  fi
  if [[ "${type,,}" == "microsoft.keyvault/vaults" ]]; then
    local deleted
    deleted="$(az keyvault list-deleted --resource-type vault --query "[?name=='${name}'].name" -o tsv)"
    if [[ -n "${deleted}" ]]; then
      die 4 "name collision: a deleted Key Vault '${name}' is kept by purge protection. Recover it with 'az keyvault recover --name ${name}' or choose another environment name (-e)."
    fi
  fi
}

plan() {
  log "Plan (az deployment sub what-if)"
  local subscribe=false params=() changes
  if previous_outputs; then
    refresh_functions
    has_function on_device_created && subscribe=true
  fi
  SUBSCRIBE_NOW="${subscribe}"
  mapfile -t params < <(deployment_parameters "${subscribe}")
  changes="$(az deployment sub what-if --name "${DEPLOYMENT_NAME}" --location "${LOCATION}" \
    --template-file "${TEMPLATE}" --parameters "${params[@]}" --no-pretty-print \
    --query "changes[].[changeType, resourceId]" -o tsv)"
  local change_type resource_id type name creates=0
  while IFS=$'\t' read -r change_type resource_id; do
    [[ -n "${change_type}" ]] || continue
    note "${change_type}: ${resource_id}"
    if [[ "${resource_id}" =~ /resourceGroups/([^/]+)$ ]]; then
      AZURE_RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-${BASH_REMATCH[1]}}"
    fi
    if [[ "${change_type}" == "Create" ]]; then
      creates=$((creates + 1))
      # .../providers/<namespace>/<type>/<name>: only top-level resources have global names.
      if [[ "${resource_id}" =~ /providers/([^/]+/[^/]+)/([^/]+)$ ]]; then
        type="${BASH_REMATCH[1]}"
        name="${BASH_REMATCH[2]}"
        check_name "${type}" "${name}"
        remember_planned_name "${type}" "${name}"
      fi
    fi
  done <<<"${changes}"
  note "${creates} resource(s) to create; global names are available"
}

# Under --what-if on a first deployment there are no outputs yet: take the names from the plan.
remember_planned_name() {
  case "${1,,}" in
    microsoft.web/sites)
      AZURE_FUNCTION_APP_NAME="${AZURE_FUNCTION_APP_NAME:-$2}"
      SERVICE_ONBOARDING_BASE_URL="${SERVICE_ONBOARDING_BASE_URL:-https://$2.azurewebsites.net}"
      ;;
    microsoft.keyvault/vaults) AZURE_KEY_VAULT_NAME="${AZURE_KEY_VAULT_NAME:-$2}" ;;
    microsoft.storage/storageaccounts) AZURE_STORAGE_ACCOUNT_NAME="${AZURE_STORAGE_ACCOUNT_NAME:-$2}" ;;
    microsoft.devices/provisioningservices) AZURE_DPS_NAME="${AZURE_DPS_NAME:-$2}" ;;
    microsoft.sql/servers) AZURE_SQL_SERVER_NAME="${AZURE_SQL_SERVER_NAME:-$2}" ;;
  esac
}

# --- infrastructure ---------------------------------------------------------------------------------------------

explain_deployment_error() {
  local errors=$1
  case "${errors}" in
    # StorageAccountAlreadyTaken, VaultAlreadyExists, IotHubNameNotAvailable, ServerNameAlreadyExists,
    # WebsiteWithGivenNameAlreadyExists and the like.
    *StorageAccountAlreadyTaken* | *VaultAlreadyExists* | *NameAlreadyExists* | *NameNotAvailable*)
      die 4 "name collision during the deployment (a global resource name is taken). Choose another environment name (-e). Details: ${errors}" ;;
    *ConflictError*deleted* | *SoftDeleted*)
      die 4 "a soft-deleted resource with this name exists (Key Vault purge protection). Recover it or choose another environment name. Details: ${errors}" ;;
    *) die 1 "deployment ${DEPLOYMENT_NAME} failed: ${errors}" ;;
  esac
}

deploy_infrastructure() {
  local subscribe=$1 params=() line errors
  log "Infrastructure (infra/main.bicep, subscribeDeviceCreated=${subscribe})"
  mapfile -t params < <(deployment_parameters "${subscribe}")
  if [[ "${WHAT_IF}" == true ]]; then
    mutate az deployment sub create --name "${DEPLOYMENT_NAME}" --location "${LOCATION}" --template-file "${TEMPLATE}" --parameters "${params[@]}"
    return 0
  fi
  errors="$(mktemp)"
  printf '    + az deployment sub create --name %s --template-file %s --parameters %s\n' "${DEPLOYMENT_NAME}" "${TEMPLATE}" "${params[*]}" >&3
  if ! line="$(az deployment sub create --name "${DEPLOYMENT_NAME}" --location "${LOCATION}" \
    --template-file "${TEMPLATE}" --parameters "${params[@]}" --query "$(outputs_query)" -o tsv 2>"${errors}")"; then
    explain_deployment_error "$(cat "${errors}")"
  fi
  rm -f "${errors}"
  read_outputs "${line}"
  note "resource group ${AZURE_RESOURCE_GROUP}, function app ${AZURE_FUNCTION_APP_NAME}"
}

# --- code -----------------------------------------------------------------------------------------------------

build_package() {
  local package=$1 path
  for path in "${PACKAGE_PATHS[@]}"; do
    [[ -e "${REPO_ROOT}/${path}" ]] || die 1 "package: ${path} is missing"
  done
  rm -f "${package}"
  if command -v zip >/dev/null 2>&1; then
    (cd "${REPO_ROOT}" && zip -q -r "${package}" "${PACKAGE_PATHS[@]}" -x '*/__pycache__/*' '*.pyc')
  else
    (cd "${REPO_ROOT}" && python3 - "${package}" "${PACKAGE_PATHS[@]}" <<'PY'
import os, sys, zipfile
target, paths = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in paths:
        for root, dirs, files in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(".pyc"):
                    zf.write(os.path.join(root, name))
PY
    )
  fi
}

publish_code() {
  log "Code package (zip deploy, remote build of requirements.txt)"
  local package="${TMPDIR:-/tmp}/onboarding-${ENV_NAME}.zip"
  if [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] would package ${PACKAGE_PATHS[*]} and publish it to ${AZURE_FUNCTION_APP_NAME:-<function app>}"
    return 0
  fi
  build_package "${package}"
  mutate az functionapp deployment source config-zip --resource-group "${AZURE_RESOURCE_GROUP}" \
    --name "${AZURE_FUNCTION_APP_NAME}" --src "${package}" --build-remote true --timeout 900 >/dev/null
  local attempt
  for ((attempt = 1; attempt <= POLL_ATTEMPTS; attempt++)); do
    refresh_functions
    has_function allocate && break
    sleep "${POLL_SECONDS}"
  done
  has_function allocate || die 1 "the function app indexed no 'allocate' function after the deployment; see its logs"
  note "functions: $(tr '\n' ' ' <<<"${FUNCTIONS}")"
}

subscribe_device_created() {
  log "Event Grid: DeviceCreated -> on_device_created"
  if [[ "${SUBSCRIBE_NOW}" == true ]]; then
    note "subscriptions deployed with the infrastructure"
  elif [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] would re-deploy infra/main.bicep with subscribeDeviceCreated=true once on_device_created is published"
  elif has_function on_device_created; then
    deploy_infrastructure true
  else
    warn "the published code has no on_device_created function yet: DeviceCreated is not subscribed (run again later)"
  fi
}

# --- SQL ------------------------------------------------------------------------------------------------------

FIREWALL_RULE=""

sql() {
  sqlcmd -S "tcp:${AZURE_SQL_SERVER_FQDN},1433" -d "${AZURE_SQL_DATABASE_NAME}" \
    --authentication-method ActiveDirectoryDefault -b -h -1 -W "$@"
}

cleanup_firewall() {
  if [[ -n "${FIREWALL_RULE}" ]]; then
    az sql server firewall-rule delete --resource-group "${AZURE_RESOURCE_GROUP}" --server "${AZURE_SQL_SERVER_NAME}" \
      --name "${FIREWALL_RULE}" >/dev/null 2>&1 || warn "could not delete SQL firewall rule ${FIREWALL_RULE}"
    FIREWALL_RULE=""
  fi
}

# The server refuses unknown client addresses and names the address in its error: open it for this run only.
sql_reachable() {
  local probe ip
  if probe="$(sql -Q "SET NOCOUNT ON; SELECT 1;" 2>&1)"; then
    return 0
  fi
  if [[ "${probe}" =~ IP\ address\ \'([0-9.]+)\' ]]; then
    ip="${BASH_REMATCH[1]}"
    FIREWALL_RULE="deploy-${ip//./-}"
    trap cleanup_firewall EXIT
    mutate az sql server firewall-rule create --resource-group "${AZURE_RESOURCE_GROUP}" --server "${AZURE_SQL_SERVER_NAME}" \
      --name "${FIREWALL_RULE}" --start-ip-address "${ip}" --end-ip-address "${ip}" >/dev/null
    local attempt
    for ((attempt = 1; attempt <= POLL_ATTEMPTS; attempt++)); do
      sql -Q "SET NOCOUNT ON; SELECT 1;" >/dev/null 2>&1 && return 0
      sleep "${POLL_SECONDS}"
    done
  fi
  if private_network; then
    die 5 "cannot reach ${AZURE_SQL_SERVER_FQDN}: with private networking SQL takes its private endpoint only; run this script from a machine in ${AZURE_VNET_NAME:-the virtual network} or a network connected to it (peering, VPN). ${probe}"
  fi
  die 5 "cannot reach ${AZURE_SQL_SERVER_FQDN} as the Entra administrator: ${probe}"
}

valid_field() { [[ "$1" =~ ^[A-Za-z0-9\ .@_+\&/-]{1,200}$ ]]; }

# --- SQL: versioned migrations -------------------------------------------------------------------------------
# infra/sql/migrations/NNNN_name.sql in version order; schema_migrations (infra/sql/schema_migrations.sql) records each
# applied version. The same files and rules as the local seed (local/seed/migrations.py): a recorded version is never
# applied again, and inside a migration each CREATE TABLE / CREATE INDEX / ALTER TABLE ... ADD runs only when its
# table, index or column is absent (T-SQL has no CREATE TABLE IF NOT EXISTS): a database made before migrations
# existed is adopted (it gains what it lacks, and 0001 is recorded) and a run that stopped half-way completes. One
# sqlcmd batch per migration, one transaction with its schema_migrations row (XACT_ABORT: any error rolls the whole
# migration back); each statement goes through EXEC(N'...'), so it compiles only when it runs.

# The T-SQL that applies migration file $1 as version $2 named $3 (statements end with ';' at the end of a line;
# '--' starts a comment; the guard of each statement: OBJECT_ID, sys.indexes, COL_LENGTH).
migration_tsql() {
  local file=$1 version=$2 name=$3
  printf 'SET XACT_ABORT ON;\nSET NOCOUNT ON;\nBEGIN TRANSACTION;\n'
  awk -v q="'" '
    function emit(s,   flat, w, guard) {
      sub(/;$/, "", s)
      flat = s
      gsub(/[ \t\n(]+/, " ", flat)
      sub(/^ /, "", flat)
      split(flat, w, " ")
      guard = ""
      if (toupper(w[1]) == "CREATE" && toupper(w[2]) == "TABLE") {
        guard = "IF OBJECT_ID(N" q w[3] q ", N" q "U" q ") IS NULL"
      } else if (toupper(w[1]) == "CREATE" && toupper(w[2]) == "INDEX" && toupper(w[4]) == "ON") {
        guard = "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N" q w[3] q " AND object_id = OBJECT_ID(N" q w[5] q "))"
      } else if (toupper(w[1]) == "CREATE" && toupper(w[2]) == "UNIQUE" && toupper(w[3]) == "INDEX") {
        guard = "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N" q w[4] q " AND object_id = OBJECT_ID(N" q w[6] q "))"
      } else if (toupper(w[1]) == "ALTER" && toupper(w[2]) == "TABLE" && toupper(w[4]) == "ADD" && toupper(w[5]) != "CONSTRAINT") {
        guard = "IF COL_LENGTH(N" q w[3] q ", N" q w[5] q ") IS NULL"
      }
      gsub(q, q q, s)
      if (guard != "") print guard
      print "    EXEC(N" q s q ");"
    }
    {
      line = $0
      sub(/--.*/, "", line)
      sub(/[ \t\r]+$/, "", line)
      if (line ~ /^[ \t]*$/) next
      statement = (statement == "") ? line : statement "\n" line
      if (line ~ /;$/) { emit(statement); statement = "" }
    }
    END { if (statement != "") emit(statement) }
  ' "${file}"
  printf "INSERT INTO schema_migrations (version, name, applied_at) VALUES (N'%s', N'%s', SYSUTCDATETIME());\nCOMMIT;\n" \
    "${version}" "${name}"
}

# The migration files in version order, one "VERSION NAME FILE" line each; a misnamed file stops the script.
migration_files() {
  local file base
  for file in "${MIGRATIONS_DIR}"/*.sql; do
    [[ -e "${file}" ]] || continue
    base="$(basename "${file}")"
    [[ "${base}" =~ ^([0-9]{4})_([a-z0-9_]+)[.]sql$ ]] || die 1 "migration ${base}: name it NNNN_name.sql"
    printf '%s %s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${file}"
  done  # the glob expands in sorted order, so in version order
}

apply_migrations() {
  local exists applied version name file script pending=0
  exists="$(sql -Q "SET NOCOUNT ON; SELECT COUNT(*) FROM sys.tables WHERE name = 'schema_migrations';" | tr -d '[:space:]')"
  if [[ "${exists}" == "0" ]]; then
    mutate sql -i "${SCRIPT_DIR}/sql/schema_migrations.sql"
    applied=""
  else
    applied="$(sql -Q "SET NOCOUNT ON; SELECT version FROM schema_migrations ORDER BY version;" | tr -d '[:blank:]\r')"
  fi
  while read -r version name file; do
    [[ -n "${version}" ]] || continue
    if grep -qx "${version}" <<<"${applied}"; then
      continue
    fi
    script="$(mktemp "${TMPDIR:-/tmp}/migration-${version}.XXXXXX")"  # BSD and GNU mktemp alike
    migration_tsql "${file}" "${version}" "${name}" >"${script}"
    mutate sql -i "${script}"
    rm -f "${script}"
    note "migration ${version}_${name} applied"
    pending=$((pending + 1))
  done < <(migration_files)
  [[ ${pending} -gt 0 ]] || note "schema current: every migration is recorded in schema_migrations"
}

setup_database() {
  log "SQL: schema, database user, hubs, facilities"
  if [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] would apply the migrations of infra/sql/migrations that schema_migrations does not record ($(migration_files | awk '{ printf "%s%s_%s", (NR > 1 ? ", " : ""), $1, $2 }')), grant ${AZURE_FUNCTION_APP_NAME:-<function app>} db_datareader/db_datawriter, and record the hubs"
    return 0
  fi
  sql_reachable
  apply_migrations
  mutate sql -i "${SCRIPT_DIR}/sql/grant-function.sql" -v "APP_NAME=${AZURE_FUNCTION_APP_NAME}" "APP_OBJECT_ID=${FUNCTION_PRINCIPAL_ID}"
  # One iot_hubs row per hub of the deployment (an existing row keeps its limits), in the region the deployment gives
  # each hub (IOT_HUB_REGIONS): with hubsPerRegion > 1 a region has several hubs, so hosts and regions do not pair up
  # by position.
  local hosts=() host units_messages
  IFS=, read -r -a hosts <<<"${IOT_HUB_HOSTNAMES}"
  read_hub_regions
  units_messages=$((HUB_DAILY_MESSAGES_PER_UNIT))
  for host in "${hosts[@]}"; do
    [[ -n "${HUB_REGION[${host}]:-}" ]] || die 1 "the deployment outputs give IoT hub ${host} no region (IOT_HUB_REGIONS: ${IOT_HUB_REGIONS:-none})"
    mutate sql -i "${SCRIPT_DIR}/sql/upsert-hub.sql" -v "HOST_NAME=${host}" "REGION=${HUB_REGION[${host}]}" \
      "MAX_DEVICES=${HUB_MAX_DEVICES}" "MAX_DAILY_MESSAGES=${units_messages}"
  done
  if [[ -n "${FACILITIES_CSV}" ]]; then
    local code name region email hub
    while IFS=, read -r code name region email || [[ -n "${code}" ]]; do
      [[ -z "${code}" || "${code}" == "facility_code" || "${code}" == \#* ]] && continue
      [[ "${code}" =~ ^[A-Z0-9]{1,16}$ ]] || die 64 "facilities: bad facility code '${code}'"
      valid_field "${name}" || die 64 "facilities: bad name for ${code}"
      if ! valid_field "${email}" || [[ "${email}" != *@* ]]; then
        die 64 "facilities: bad manager e-mail for ${code}"
      fi
      hub=""  # the region's first hub (the first of IOT_HUB_HOSTNAMES in that region)
      for host in "${hosts[@]}"; do
        if [[ "${HUB_REGION[${host}]}" == "${region}" ]]; then hub="${host}"; break; fi
      done
      [[ -n "${hub}" ]] || die 64 "facilities: ${code} is in unknown region '${region}' (regions: ${REGIONS:-})"
      mutate sql -i "${SCRIPT_DIR}/sql/upsert-facility.sql" -v "CODE=${code}" "NAME=${name}" "REGION=${region}" \
        "PREFERRED_HUB=${hub}" "MANAGER_EMAIL=${email}"
    done <"${FACILITIES_CSV}"
  else
    note "no --facilities file: load your facilities into the facilities table (allocation refuses unknown facilities)"
  fi
  cleanup_firewall
}

# --- templates ------------------------------------------------------------------------------------------------

upload_templates() {
  log "Sample templates -> ${TEMPLATES_CONTAINER:-sensor-configurations}"
  local file blob exists
  for file in "${SCRIPT_DIR}"/templates/*.json; do
    blob="$(basename "${file}")"
    exists=false
    if [[ -n "${AZURE_STORAGE_ACCOUNT_NAME:-}" && "${OVERWRITE_TEMPLATES}" != true ]]; then
      exists="$(az storage blob exists --account-name "${AZURE_STORAGE_ACCOUNT_NAME}" --container-name "${TEMPLATES_CONTAINER:-sensor-configurations}" \
        --name "${blob}" --auth-mode login --query exists -o tsv 2>/dev/null || echo false)"
    fi
    if [[ "${exists,,}" == "true" ]]; then
      note "${blob} present (kept; --overwrite-templates replaces it)"
    else
      mutate az storage blob upload --account-name "${AZURE_STORAGE_ACCOUNT_NAME:-<storage>}" \
        --container-name "${TEMPLATES_CONTAINER:-sensor-configurations}" --name "${blob}" --file "${file}" \
        --auth-mode login --overwrite true --only-show-errors >/dev/null
    fi
  done
}

# --- regional CAs ---------------------------------------------------------------------------------------------

READY_CAS=()

pem_csr() {
  printf -- '-----BEGIN CERTIFICATE REQUEST-----\n'
  fold -w 64 <<<"$1"
  printf -- '-----END CERTIFICATE REQUEST-----\n'
}

sign_csr_with_root() {
  local ca=$1
  openssl x509 -req -in "${CA_DIR}/${ca}.csr" -CA "${ROOT_CERT}" -CAkey "${ROOT_KEY}" -CAcreateserial \
    -days 1826 -sha384 -extfile "${SCRIPT_DIR}/ca/intermediate-ca.ext" -extensions v3_intermediate \
    -out "${CA_DIR}/${ca}.signed.pem" 2>/dev/null
  cat "${CA_DIR}/${ca}.signed.pem" "${ROOT_CERT}" >"${CA_DIR}/${ca}.pem"
}

# The function app signs with the CA keys and with no other key: Key Vault Crypto User at the scope of each CA key.
# Key Vault RBAC takes role assignments on a single key, but the key must exist first, and ARM does not create it
# (infra/modules/rbac.bicep grants the app no signing role at the vault). Idempotent: an existing assignment is kept.
grant_signing() {
  local ca=$1 scope found=""
  scope="/subscriptions/${SUBSCRIPTION_ID}/resourceGroups/${AZURE_RESOURCE_GROUP:-<resource group>}/providers/Microsoft.KeyVault/vaults/${AZURE_KEY_VAULT_NAME}/keys/${ca}"
  if [[ -n "${FUNCTION_PRINCIPAL_ID}" ]]; then
    found="$(az role assignment list --assignee-object-id "${FUNCTION_PRINCIPAL_ID}" --role "${KEY_VAULT_CRYPTO_USER_ROLE}" \
      --scope "${scope}" --fill-principal-name false --query "[0].id" -o tsv 2>/dev/null || true)"
  fi
  if [[ -n "${found}" ]]; then
    note "${ca}: the function app may sign with this key (Key Vault Crypto User on the key)"
    return 0
  fi
  mutate az role assignment create --assignee-object-id "${FUNCTION_PRINCIPAL_ID:-<function app identity>}" \
    --assignee-principal-type ServicePrincipal --role "${KEY_VAULT_CRYPTO_USER_ROLE}" --scope "${scope}" >/dev/null
}

ensure_ca() {
  local region=$1 ca="intermediate-ca-$1" status csr policy
  if az keyvault certificate show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --query x509ThumbprintHex -o tsv >/dev/null 2>&1; then
    note "${ca}: present in Key Vault"
    grant_signing "${ca}"
    READY_CAS+=("${region}")
    return 0
  fi
  status="$(az keyvault certificate pending show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --query status -o tsv 2>/dev/null || true)"
  if [[ -z "${status}" ]]; then
    policy="$(mktemp)"
    sed "s/__REGION__/${region}/" "${SCRIPT_DIR}/ca/intermediate-ca-policy.json" >"${policy}"
    mutate az keyvault certificate create --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --policy "@${policy}" >/dev/null
    rm -f "${policy}"
  fi
  grant_signing "${ca}"  # the key exists from the creation of the pending certificate on
  if [[ -z "${status}" && "${WHAT_IF}" == true ]]; then
    READY_CAS+=("${region}")
    return 0
  fi
  if [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] ${ca}: would merge ${CA_DIR}/${ca}.pem once the offline root has signed the CSR"
    return 0
  fi
  mkdir -p "${CA_DIR}"
  csr="$(az keyvault certificate pending show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --query csr -o tsv)"
  pem_csr "${csr}" >"${CA_DIR}/${ca}.csr"
  if [[ ! -s "${CA_DIR}/${ca}.pem" && -n "${ROOT_CERT}" ]]; then
    sign_csr_with_root "${ca}"
  fi
  if [[ -s "${CA_DIR}/${ca}.pem" ]]; then
    mutate az keyvault certificate pending merge --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --file "${CA_DIR}/${ca}.pem" >/dev/null
    READY_CAS+=("${region}")
  else
    warn "${ca}: its key is in Key Vault; sign ${CA_DIR}/${ca}.csr with the offline root (CA:true, pathlen 0, 5 years; see infra/ca/intermediate-ca.ext), save the chain as ${CA_DIR}/${ca}.pem and run again"
  fi
}

register_ca_in_dps() {
  register_dps_certificate "intermediate-ca-$1" "intermediate-ca-$1"
}

# Key Vault certificate $2 (version $3, else the current one) as DPS CA certificate $1, verified: DPS takes a CA
# certificate uploaded as verified (--verified true) in place of the proof-of-possession round. Idempotent.
register_dps_certificate() {
  local name=$1 kv_name=$2 version=${3:-} verified file etag version_option=()
  verified="$(az iot dps certificate show --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
    --certificate-name "${name}" --query properties.isVerified -o tsv 2>/dev/null || true)"
  if [[ "${verified,,}" == "true" ]]; then
    note "${name}: verified in DPS"
    return 0
  fi
  file="${CA_DIR}/${name}.cer.pem"
  [[ -z "${version}" ]] || version_option=(--version "${version}")
  [[ "${WHAT_IF}" == true ]] || mkdir -p "${CA_DIR}"
  mutate az keyvault certificate download --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${kv_name}" \
    ${version_option[@]+"${version_option[@]}"} --file "${file}" --encoding PEM
  if [[ -z "${verified}" ]]; then
    mutate az iot dps certificate create --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --certificate-name "${name}" --path "${file}" --verified true >/dev/null
  else
    etag="$(az iot dps certificate show --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --certificate-name "${name}" --query etag -o tsv)"
    mutate az iot dps certificate update --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --certificate-name "${name}" --path "${file}" --etag "${etag}" --verified true >/dev/null
  fi
}

setup_cas() {
  log "Regional intermediate CAs (Key Vault, HSM keys) and their registration in DPS"
  local regions=() region
  IFS=, read -r -a regions <<<"${REGIONS:-west,central,east}"
  for region in "${regions[@]}"; do
    ensure_ca "${region}"
  done
  for region in "${READY_CAS[@]}"; do
    register_ca_in_dps "${region}"
  done
}

# --- DPS enrollment groups ------------------------------------------------------------------------------------

setup_enrollment_groups() {
  log "DPS enrollment groups (X.509 CA per region, custom allocation -> /api/allocate)"
  local host="${SERVICE_ONBOARDING_BASE_URL:-https://${AZURE_FUNCTION_APP_NAME:-<function app>}.azurewebsites.net}"
  local key="<function key>" url hubs=() region group current shown linked wanted
  if [[ ${#READY_CAS[@]} -eq 0 ]]; then
    warn "no regional CA is ready: no enrollment group was created"
    return 0
  fi
  if [[ "${WHAT_IF}" != true ]] || has_function allocate; then
    key="$(az functionapp function keys list --resource-group "${AZURE_RESOURCE_GROUP}" --name "${AZURE_FUNCTION_APP_NAME}" \
      --function-name allocate --query default -o tsv)"
    [[ -n "${key}" ]] || die 1 "no function key for allocate"
  fi
  url="${host}/api/allocate?code=${key}"
  # One argument per hub: --iot-hubs takes a list (nargs='+' since azure-iot 0.24.0) and keeps a single quoted
  # word as ONE hub entry, so "h1 h2 h3" would link a hub of that name instead of three.
  IFS=, read -r -a hubs <<<"${IOT_HUB_HOSTNAMES}"
  if [[ ${#hubs[@]} -eq 0 ]]; then
    [[ "${WHAT_IF}" == true ]] || die 1 "the deployment outputs name no IoT hub (IOT_HUB_HOSTNAMES)"
    hubs=("<iot hub host names>")
  fi
  wanted="$(IFS=$'\t'; printf '%s' "${hubs[*]}")"
  for region in "${READY_CAS[@]}"; do
    group="sensors-${region}"
    # Two rows: the webhook URL, then the group's hubs (a list inside the result list: one row, tab-separated).
    shown="$(az iot dps enrollment-group show --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --enrollment-id "${group}" --query "[customAllocationDefinition.webhookUrl, iotHubs]" -o tsv 2>/dev/null || true)"
    current="" linked=""
    { IFS= read -r current || true; IFS= read -r linked || true; } <<<"${shown}"
    [[ "${current}" != None ]] || current=""
    if [[ -z "${current}" ]]; then
      mutate az iot dps enrollment-group create --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
        --enrollment-id "${group}" --root-ca-name "intermediate-ca-${region}" --allocation-policy custom \
        --webhook-url "${url}" --api-version "${DPS_WEBHOOK_API_VERSION}" --iot-hubs "${hubs[@]}" \
        --provisioning-status enabled --reprovision-policy reprovisionandmigratedata \
        --initial-twin-tags "{\"onboarding\": {\"region\": \"${region}\"}}" >/dev/null
    elif [[ "${current}" != "${url}" || "${linked}" != "${wanted}" ]]; then
      # A new webhook key, or hubs added (hubsPerRegion): DPS offers the webhook only the group's hubs (linkedHubs).
      mutate az iot dps enrollment-group update --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
        --enrollment-id "${group}" --allocation-policy custom --webhook-url "${url}" \
        --api-version "${DPS_WEBHOOK_API_VERSION}" --iot-hubs "${hubs[@]}" >/dev/null
    else
      note "${group}: present, webhook and hubs current"
    fi
  done
}

# --- CA rotation (docs/ca-rotation.md) ---------------------------------------------------------------------------
# A regional CA renewed with a new key inside the fleet's life, as Microsoft's "How to roll X.509 device
# certificates" rolls an expiring CA certificate of an enrollment group
# (https://learn.microsoft.com/azure/iot-dps/how-to-roll-certificates): stage 1 (--rotate-ca) makes a new version of
# the Key Vault certificate with a new key, registers it verified in DPS under a dated name and sets it as the
# group's SECONDARY CA reference, so devices with a certificate of either version provision; stage 2 (--promote-ca),
# once no device certificate of the old version is in use, makes it the primary and removes the secondary.
#
# `-o tsv` prints a list one item per line (knack's TSV output makes each item of a list a row); the queries below
# that read several values ask for a list holding one list: one tab-separated row. A JSON null prints as None.

CA_PRIMARY=""
CA_SECONDARY=""
KV_THUMBPRINT=""
KV_NOT_BEFORE=""
KV_VERSION=""
DPS_THUMBPRINT=""
DPS_VERIFIED=""
DPS_EXPIRY=""

# The CA certificates enrollment group $1 references (attestation.x509.caReferences): CA_PRIMARY, CA_SECONDARY.
read_ca_references() {
  local group=$1 line
  if ! line="$(az iot dps enrollment-group show --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
    --enrollment-id "${group}" --query "[[attestation.x509.caReferences.primary, attestation.x509.caReferences.secondary]]" \
    -o tsv 2>/dev/null)"; then
    die 1 "enrollment group ${group} is not in ${AZURE_DPS_NAME}: deploy the environment first"
  fi
  IFS=$'\t' read -r CA_PRIMARY CA_SECONDARY <<<"${line}"
  [[ "${CA_PRIMARY}" != None ]] || CA_PRIMARY=""
  [[ "${CA_SECONDARY}" != None ]] || CA_SECONDARY=""
  [[ -n "${CA_PRIMARY}" ]] || die 1 "enrollment group ${group} references no primary CA certificate (attestation.x509.caReferences)"
}

# The current version of Key Vault certificate $1: KV_THUMBPRINT (SHA-1, hex), KV_NOT_BEFORE, KV_VERSION.
read_kv_current() {
  local line id
  line="$(az keyvault certificate show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "$1" \
    --query "[[x509ThumbprintHex, attributes.notBefore, id]]" -o tsv 2>/dev/null || true)"
  IFS=$'\t' read -r KV_THUMBPRINT KV_NOT_BEFORE id <<<"${line}"
  KV_THUMBPRINT="${KV_THUMBPRINT^^}"
  [[ "${KV_THUMBPRINT}" != NONE ]] || KV_THUMBPRINT=""
  KV_VERSION="${id##*/}"
  [[ "${KV_VERSION}" != None ]] || KV_VERSION=""
}

# DPS CA certificate $1: DPS_THUMBPRINT (SHA-1, hex; empty when there is no such certificate), DPS_VERIFIED, DPS_EXPIRY.
read_dps_certificate() {
  local line
  line="$(az iot dps certificate show --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
    --certificate-name "$1" --query "[[properties.thumbprint, properties.isVerified, properties.expiry]]" -o tsv \
    2>/dev/null || true)"
  IFS=$'\t' read -r DPS_THUMBPRINT DPS_VERIFIED DPS_EXPIRY <<<"${line}"
  DPS_THUMBPRINT="${DPS_THUMBPRINT^^}"
  [[ "${DPS_THUMBPRINT}" != NONE ]] || DPS_THUMBPRINT=""
  DPS_VERIFIED="${DPS_VERIFIED,,}"
}

# True while Key Vault certificate $1 has a creation operation in progress (a new version waiting for its merge).
ca_version_pending() {
  local status
  status="$(az keyvault certificate pending show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "$1" --query status \
    -o tsv 2>/dev/null || true)"
  [[ "${status,,}" == "inprogress" ]]
}

# The DPS name of CA $1's current version: $1-YYYYMMDD, the day of its notBefore (so every run finds the same name).
ca_version_name() {
  if [[ "${KV_NOT_BEFORE}" =~ ^([0-9]{4})-([0-9]{2})-([0-9]{2}) ]]; then
    printf '%s-%s%s%s' "$1" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
  else
    printf '%s-%s' "$1" "$(date -u +%Y%m%d)"
  fi
}

# $1, or $1-2, $1-3 ... when a DPS certificate of that name holds another certificate than KV_THUMBPRINT (two
# versions made on one day): the first name that is free or holds this version, the same on every run.
free_dps_name() {
  local candidate=$1 n=1
  while :; do
    read_dps_certificate "${candidate}"
    if [[ -z "${DPS_THUMBPRINT}" || "${DPS_THUMBPRINT}" == "${KV_THUMBPRINT}" ]]; then
      printf '%s' "${candidate}"
      return 0
    fi
    n=$((n + 1))
    ((n <= 9)) || die 1 "DPS certificates $1 to $1-9 all hold other certificates than ${KV_THUMBPRINT}"
    candidate="$1-${n}"
  done
}

# The pending new version of CA $1: its CSR goes to ${CA_DIR}/$1.rotation.csr; true once ${CA_DIR}/$1.rotation.pem
# holds the chain the offline root signed (made now with --sign-with-root), false while it is missing. Called as a
# condition, where set -e is off: every failure here is a die.
rotation_chain_ready() {
  local ca=$1 region=$2 stem="${CA_DIR}/$1.rotation" csr request
  mkdir -p "${CA_DIR}" || die 1 "cannot create ${CA_DIR}"
  csr="$(az keyvault certificate pending show --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --query csr -o tsv)" ||
    die 1 "${ca}: cannot read the CSR of its pending version"
  request="$(pem_csr "${csr}")"
  if [[ -s "${stem}.pem" && -s "${stem}.csr" && "$(cat "${stem}.csr")" != "${request}" ]]; then
    die 1 "${stem}.pem was signed for another CSR than the pending version of ${ca}: move ${stem}.pem and ${stem}.csr away and run again"
  fi
  printf '%s\n' "${request}" >"${stem}.csr" || die 1 "cannot write ${stem}.csr"
  if [[ ! -s "${stem}.pem" && -n "${ROOT_CERT}" ]]; then
    sign_csr_with_root "${ca}.rotation" || die 1 "openssl could not sign ${stem}.csr with ${ROOT_CERT}"
  fi
  [[ -s "${stem}.pem" ]] && return 0
  warn "${ca}: the new version's key is in Key Vault; sign ${stem}.csr with the offline root (CA:true, pathlen 0, 5 years; see infra/ca/intermediate-ca.ext), save the chain as ${stem}.pem and run again (infra/deploy.sh -e ${ENV_NAME} --rotate-ca ${region})"
  return 1
}

# Stage 1. Each step looks before it acts: a rotation that stopped (waiting for the offline root, or halfway) goes on
# where it stopped, and one that is done (the group's secondary is the current Key Vault version) changes nothing.
rotate_ca() {
  local region=$1 ca="intermediate-ca-$1" group="sensors-$1" policy name new_version=false
  log "CA rotation, stage 1: ${ca} gets a new key; DPS enrollment group ${group} trusts it as its secondary CA"
  read_ca_references "${group}"
  note "${group}: primary CA ${CA_PRIMARY}, secondary CA ${CA_SECONDARY:-(none)}"
  if [[ -n "${CA_SECONDARY}" ]]; then
    read_kv_current "${ca}"
    read_dps_certificate "${CA_SECONDARY}"
    if [[ -n "${KV_THUMBPRINT}" && "${DPS_THUMBPRINT}" == "${KV_THUMBPRINT}" ]]; then
      note "${ca}: rotated: the secondary CA ${CA_SECONDARY} is its current Key Vault version (${KV_THUMBPRINT}); nothing to do"
      note "stage 2, once every device certificate of ${CA_PRIMARY} has expired or been renewed: infra/deploy.sh -e ${ENV_NAME} --promote-ca ${region}"
      return 0
    fi
    die 1 "${group} has a secondary CA, ${CA_SECONDARY}, that is not the current version of ${ca} in Key Vault: finish that rotation (--promote-ca ${region}) or remove the secondary before another"
  fi
  if ca_version_pending "${ca}"; then
    note "${ca}: a new version waits for its signed certificate"
    new_version=true
  else
    read_kv_current "${ca}"
    read_dps_certificate "${CA_PRIMARY}"
    [[ -n "${KV_THUMBPRINT}" ]] || die 1 "${ca} is not in Key Vault ${AZURE_KEY_VAULT_NAME}: deploy the environment first"
    [[ -n "${DPS_THUMBPRINT}" ]] || die 1 "the primary CA of ${group}, ${CA_PRIMARY}, is not a CA certificate of ${AZURE_DPS_NAME}"
    if [[ "${KV_THUMBPRINT}" == "${DPS_THUMBPRINT}" ]]; then
      # A new version of the certificate, with a new key (the policy's reuseKey is false): pending until merged.
      policy="$(mktemp)"
      sed "s/__REGION__/${region}/" "${SCRIPT_DIR}/ca/intermediate-ca-policy.json" >"${policy}"
      mutate az keyvault certificate create --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --policy "@${policy}" >/dev/null
      rm -f "${policy}"
      new_version=true
    else
      note "${ca}: its current Key Vault version (${KV_THUMBPRINT}) is newer than the group's primary CA: registering it"
    fi
  fi
  if [[ "${new_version}" == true && "${WHAT_IF}" == true ]]; then
    name="${ca}-<YYYYMMDD>"
    note "[what-if] ${ca}: would write ${CA_DIR}/${ca}.rotation.csr and merge ${CA_DIR}/${ca}.rotation.pem once the offline root has signed it, then register the new version as ${name} (the day of its notBefore)"
    mutate az keyvault certificate pending merge --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" --file "${CA_DIR}/${ca}.rotation.pem"
    mutate az iot dps certificate create --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --certificate-name "${name}" --path "${CA_DIR}/${name}.cer.pem" --verified true
    mutate az iot dps enrollment-group update --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
      --enrollment-id "${group}" --secondary-root-ca-name "${name}"
    return 0
  fi
  if [[ "${new_version}" == true ]]; then
    rotation_chain_ready "${ca}" "${region}" || return 0
    mutate az keyvault certificate pending merge --vault-name "${AZURE_KEY_VAULT_NAME}" --name "${ca}" \
      --file "${CA_DIR}/${ca}.rotation.pem" >/dev/null
    read_kv_current "${ca}"
    [[ -n "${KV_THUMBPRINT}" ]] || die 1 "${ca}: Key Vault shows no certificate for the merged version"
    note "${ca}: new version ${KV_VERSION} (${KV_THUMBPRINT}); the app signs new certificates and CRLs with its key"
  fi
  name="$(free_dps_name "$(ca_version_name "${ca}")")"
  if [[ "${new_version}" == true ]]; then  # the signed chain is merged: kept under the version's name, out of the way
    mv -f "${CA_DIR}/${ca}.rotation.pem" "${CA_DIR}/${name}.pem"
    mv -f "${CA_DIR}/${ca}.rotation.csr" "${CA_DIR}/${name}.csr"
    rm -f "${CA_DIR}/${ca}.rotation.signed.pem"
  fi
  register_dps_certificate "${name}" "${ca}" "${KV_VERSION}"
  mutate az iot dps enrollment-group update --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
    --enrollment-id "${group}" --secondary-root-ca-name "${name}" >/dev/null
  note "${group}: devices whose certificate chains to ${CA_PRIMARY} or to ${name} provision"
  note "stage 2, once every device certificate of ${CA_PRIMARY} has expired or been renewed: infra/deploy.sh -e ${ENV_NAME} --promote-ca ${region}"
}

# Stage 2: the group's secondary CA, the current Key Vault version, becomes its primary; the secondary is removed.
promote_ca() {
  local region=$1 ca="intermediate-ca-$1" group="sensors-$1" old
  log "CA rotation, stage 2: the secondary CA of DPS enrollment group ${group} becomes its primary"
  read_ca_references "${group}"
  [[ -n "${CA_SECONDARY}" ]] || die 1 "${group} has no secondary CA to promote (its primary is ${CA_PRIMARY}): run stage 1 first (--rotate-ca ${region})"
  read_dps_certificate "${CA_SECONDARY}"
  [[ "${DPS_VERIFIED}" == true ]] || die 1 "the secondary CA of ${group}, ${CA_SECONDARY}, is not a verified CA certificate of ${AZURE_DPS_NAME}: run --rotate-ca ${region} again"
  read_kv_current "${ca}"
  if [[ "${DPS_THUMBPRINT}" != "${KV_THUMBPRINT}" ]]; then
    die 1 "the secondary CA of ${group}, ${CA_SECONDARY} (${DPS_THUMBPRINT}), is not the current version of ${ca} in Key Vault (${KV_THUMBPRINT:-none}), which signs new certificates: settle that first"
  fi
  old="${CA_PRIMARY}"
  read_dps_certificate "${old}"
  note "${group}: ${old} (expires ${DPS_EXPIRY:-unknown}) stops being trusted: a device whose certificate it issued and that was not renewed can no longer provision"
  mutate az iot dps enrollment-group update --dps-name "${AZURE_DPS_NAME}" --resource-group "${AZURE_RESOURCE_GROUP}" \
    --enrollment-id "${group}" --root-ca-name "${CA_SECONDARY}" --remove-secondary-certificate true >/dev/null
  note "${group}: primary CA ${CA_SECONDARY}, no secondary; DPS certificate ${old} stays registered, referenced by no group"
}

run_ca_action() {
  previous_outputs || die 1 "no deployment ${DEPLOYMENT_NAME} in this subscription: deploy the environment first (infra/deploy.sh -e ${ENV_NAME} -l LOCATION)"
  local known="${REGIONS:-west,central,east}"
  [[ ",${known}," == *",${CA_REGION},"* ]] || die 64 "region ${CA_REGION}: the regions of ${ENV_NAME} are ${known}"
  if [[ -z "${AZURE_KEY_VAULT_NAME}" || -z "${AZURE_DPS_NAME}" || -z "${AZURE_RESOURCE_GROUP}" ]]; then
    die 1 "the outputs of deployment ${DEPLOYMENT_NAME} name no Key Vault, DPS or resource group"
  fi
  if [[ -n "${AZURE_VNET_NAME}" ]]; then
    note "private networking: Key Vault takes its private endpoint only; run this from a machine in ${AZURE_VNET_NAME} (or a network connected to it)"
  fi
  case "${CA_ACTION}" in
    rotate) rotate_ca "${CA_REGION}" ;;
    promote) promote_ca "${CA_REGION}" ;;
  esac
  if [[ "${WHAT_IF}" == true ]]; then
    log "What-if complete: nothing was changed"
  fi
}

# --- CRLs and smoke check -------------------------------------------------------------------------------------

# Each ready CA's CRL is the blob {ca}.crl of the CRL container (crl), which the app publishes (shared/crl.py). A CA
# without one (a first deployment, or an upgrade from the releases that kept CRLs in Key Vault secrets: the new
# release reads blobs only) gets it from one run of refresh_crls, started here through the admin endpoint; the smoke
# check that follows waits for each CA's crl component to be ok.
publish_first_crls() {
  log "CRLs (allocation fails closed without them)"
  local region missing=0 exists container="${CRL_CONTAINER:-crl}"
  for region in "${READY_CAS[@]}"; do
    exists="$(az storage blob exists --account-name "${AZURE_STORAGE_ACCOUNT_NAME:-<storage>}" --container-name "${container}" \
      --name "intermediate-ca-${region}.crl" --auth-mode login --query exists -o tsv 2>/dev/null || echo false)"
    if [[ "${exists,,}" != "true" ]]; then
      missing=$((missing + 1))
    fi
  done
  if [[ ${#READY_CAS[@]} -eq 0 ]]; then
    note "no regional CA is ready yet"
  elif [[ ${missing} -eq 0 ]]; then
    note "every ready CA has its CRL in ${container}"
  elif [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] would run refresh_crls once for ${missing} CA(s) without a CRL in ${container}"
  elif has_function refresh_crls; then
    local master
    master="$(az functionapp keys list --resource-group "${AZURE_RESOURCE_GROUP}" --name "${AZURE_FUNCTION_APP_NAME}" --query masterKey -o tsv)"
    note "${missing} CA(s) without a CRL in ${container}: running refresh_crls once (it publishes them)"
    mutate az rest --method post --url "${SERVICE_ONBOARDING_BASE_URL}/admin/functions/refresh_crls" \
      --headers "x-functions-key=${master}" "Content-Type=application/json" --body '{"input": ""}' \
      --skip-authorization-header >/dev/null
  else
    warn "${missing} CA(s) have no CRL and the code has no refresh_crls function yet: allocation answers crl_unavailable"
  fi
}

smoke_check() {
  log "Smoke check: GET /api/health"
  if [[ "${WHAT_IF}" == true ]]; then
    note "[what-if] would call ${SERVICE_ONBOARDING_BASE_URL:-https://<function app>.azurewebsites.net}/api/health"
    return 0
  fi
  local attempt status=""
  for ((attempt = 1; attempt <= POLL_ATTEMPTS; attempt++)); do
    status="$(az rest --method get --url "${SERVICE_ONBOARDING_BASE_URL}/api/health" --skip-authorization-header \
      --query status -o tsv 2>/dev/null || true)"
    [[ "${status}" == "ok" ]] && break
    sleep "${POLL_SECONDS}"
  done
  if [[ "${status}" != "ok" ]]; then
    az rest --method get --url "${SERVICE_ONBOARDING_BASE_URL}/api/health" --skip-authorization-header >&2 || true
    die 6 "the app is deployed but /api/health is not ok (the components: GET /api/health/details with a function key, or onboarding --settings FILE health)"
  fi
  note "healthy: every dependency answers"
}

main() {
  parse_args "$@"
  preflight
  if [[ -n "${CA_ACTION}" ]]; then
    run_ca_action
    return 0
  fi
  resolve_parameters
  plan
  if [[ "${WHAT_IF}" == true ]]; then
    log "What-if: the steps that would follow (nothing is changed)"
  fi
  deploy_infrastructure "${SUBSCRIBE_NOW}"
  publish_code
  subscribe_device_created
  if private_network; then
    log "Private networking: the next steps reach SQL, Storage and Key Vault through their private endpoints"
    note "run this script from a machine in ${AZURE_VNET_NAME:-the virtual network} (or a network connected to it: peering, VPN, ExpressRoute); from elsewhere these services refuse it"
  fi
  setup_database
  upload_templates
  setup_cas
  setup_enrollment_groups
  publish_first_crls
  smoke_check
  if [[ "${WHAT_IF}" == true ]]; then
    log "What-if complete: nothing was changed"
  else
    log "Done: ${SERVICE_ONBOARDING_BASE_URL}  (DPS ${AZURE_DPS_NAME}, resource group ${AZURE_RESOURCE_GROUP})"
  fi
}

# Sourced (tests read single functions, such as migration_tsql), the script defines its functions and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
