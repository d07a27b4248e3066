import pytest

from health.settings import check_timeout_s
from shared.config import RegionalCa, SettingError, Settings


def test_missing_setting_names_the_variable_at_first_use():
    settings = Settings({})
    with pytest.raises(SettingError, match="SQL_CONNECTION_STRING"):
        _ = settings.sql_connection_string


def test_key_vault_url_must_be_https():
    with pytest.raises(SettingError, match="KEY_VAULT_URL"):
        _ = Settings({"KEY_VAULT_URL": "http://vault"}).key_vault_url


def test_regional_cas_parse_and_reject_malformed():
    settings = Settings({"REGIONAL_CAS": "west=intermediate-ca-west, east=intermediate-ca-east"})
    assert settings.regional_cas == [RegionalCa("west", "intermediate-ca-west"),
                                     RegionalCa("east", "intermediate-ca-east")]
    with pytest.raises(SettingError, match="REGIONAL_CAS"):
        _ = Settings({"REGIONAL_CAS": "west"}).regional_cas


def test_hub_host_names_come_from_connection_strings_when_given():
    conns = ("HostName=hub-a.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5,"
             "HostName=localhost:8442;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5")
    settings = Settings({"IOT_HUB_CONNECTION_STRINGS": conns})
    assert settings.iot_hub_host_names == ["hub-a.azure-devices.net", "localhost:8442"]
    assert settings.iot_hub_connection_string("localhost:8442").startswith("HostName=localhost:8442;")
    assert settings.iot_hub_connection_string("localhost:844") is None


def test_hub_host_names_for_identity_mode():
    settings = Settings({"IOT_HUB_HOSTNAMES": "a.azure-devices.net,b.azure-devices.net"})
    assert settings.iot_hub_host_names == ["a.azure-devices.net", "b.azure-devices.net"]
    assert settings.iot_hub_connection_string("a.azure-devices.net") is None
    with pytest.raises(SettingError, match="IOT_HUB_HOSTNAMES"):
        _ = Settings({}).iot_hub_host_names


def test_managed_identity_defaults_on_in_azure_and_can_be_forced():
    assert Settings({"WEBSITE_INSTANCE_ID": "abc"}).use_managed_identity is True
    assert Settings({}).use_managed_identity is False
    assert Settings({"USE_MANAGED_IDENTITY": "false", "IDENTITY_ENDPOINT": "x"}).use_managed_identity is False
    with pytest.raises(SettingError, match="USE_MANAGED_IDENTITY"):
        _ = Settings({"USE_MANAGED_IDENTITY": "maybe"}).use_managed_identity


def test_storage_needs_uris_without_connection_string():
    with pytest.raises(SettingError, match="STORAGE_BLOB_URI"):
        _ = Settings({}).storage_blob_uri
    assert "127.0.0.1:10000" in Settings({"STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
                                         ).storage_connection_string


def test_numbers_are_validated():
    with pytest.raises(SettingError, match="HEALTH_CHECK_TIMEOUT_SECONDS"):
        _ = check_timeout_s(Settings({"HEALTH_CHECK_TIMEOUT_SECONDS": "soon"}))
    assert check_timeout_s(Settings({"HEALTH_CHECK_TIMEOUT_SECONDS": "2.5"})) == 2.5
