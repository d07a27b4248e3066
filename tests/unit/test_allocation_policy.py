import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocation.policy import FacilityPlacement, HubLoad, choose_hub
from shared.errors import OnboardingError

WEST_A, WEST_B, EAST = "hub-west-a.azure-devices.net", "hub-west-b.azure-devices.net", "hub-east.azure-devices.net"
FAC03 = FacilityPlacement("FAC03", "west", WEST_A)


def hubs(**counts):
    """hubs(west_a=10, ...) -> name -> HubLoad with max 100 devices each."""
    names = {"west_a": (WEST_A, "west"), "west_b": (WEST_B, "west"), "east": (EAST, "east")}
    return {names[k][0]: HubLoad(names[k][0], names[k][1], True, v, 100) for k, v in counts.items()}


ALL = [WEST_A, WEST_B, EAST]


def test_preferred_hub_when_below_threshold():
    choice = choose_hub(FAC03, hubs(west_a=10, west_b=0, east=0), ALL)
    assert (choice.host_name, choice.rule, choice.cross_region) == (WEST_A, "preferred", False)


def test_full_preferred_spills_to_least_utilised_in_region():
    choice = choose_hub(FAC03, hubs(west_a=95, west_b=40, east=0), ALL)
    assert (choice.host_name, choice.rule, choice.cross_region) == (WEST_B, "region", False)


def test_threshold_is_a_setting():
    assert choose_hub(FAC03, hubs(west_a=95, west_b=40), ALL, threshold=0.99).host_name == WEST_A


def test_region_exhausted_goes_cross_region_and_says_so():
    choice = choose_hub(FAC03, hubs(west_a=100, west_b=100, east=50), ALL)
    assert (choice.host_name, choice.rule, choice.cross_region) == (EAST, "cross_region", True)


def test_everything_full_is_refused():
    with pytest.raises(OnboardingError) as err:
        choose_hub(FAC03, hubs(west_a=100, west_b=100, east=100), ALL)
    assert err.value.code == "no_hub_capacity"


def test_only_linked_hubs_are_considered():
    choice = choose_hub(FAC03, hubs(west_a=10, west_b=0, east=0), [EAST])
    assert choice.host_name == EAST and choice.cross_region


def test_hub_not_accepting_is_skipped():
    state = hubs(west_a=10, west_b=50)
    state[WEST_A] = HubLoad(WEST_A, "west", False, 10, 100)
    assert choose_hub(FAC03, state, ALL).host_name == WEST_B


def test_reprovisioning_keeps_the_current_hub_even_when_busy():
    choice = choose_hub(FAC03, hubs(west_a=10, west_b=99), ALL, current_hub=WEST_B)
    assert (choice.host_name, choice.rule) == (WEST_B, "current")


def test_reprovisioning_leaves_a_current_hub_in_another_region():
    choice = choose_hub(FAC03, hubs(west_a=10, east=0), ALL, current_hub=EAST)
    assert (choice.host_name, choice.rule) == (WEST_A, "preferred")


def test_reprovisioning_leaves_an_unlinked_current_hub():
    assert choose_hub(FAC03, hubs(west_a=10, west_b=0), [WEST_A], current_hub=WEST_B).host_name == WEST_A


def test_message_quota_counts_towards_utilisation():
    state = hubs(west_b=50)
    state[WEST_A] = HubLoad(WEST_A, "west", True, 1, 100, daily_messages=950, max_daily_messages=1000)
    assert choose_hub(FAC03, state, ALL).host_name == WEST_B


def test_ties_break_on_host_name():
    facility = FacilityPlacement("FAC05", "west", "elsewhere")
    assert choose_hub(facility, hubs(west_a=30, west_b=30), ALL).host_name == WEST_A


@given(st.lists(st.tuples(st.sampled_from(["west", "east"]), st.integers(0, 120), st.booleans()),
                min_size=1, max_size=6))
def test_chosen_hub_is_always_linked_accepting_and_not_full(specs):
    state = {f"h{i}": HubLoad(f"h{i}", region, accepting, count, 100)
             for i, (region, count, accepting) in enumerate(specs)}
    facility = FacilityPlacement("FAC01", "west", "h0")
    try:
        choice = choose_hub(facility, state, list(state))
    except OnboardingError as err:
        assert err.code == "no_hub_capacity"
        assert all(not h.accepting or h.full for h in state.values())
        return
    hub = state[choice.host_name]
    assert hub.accepting and not hub.full
    assert choice.cross_region == (hub.region != "west")
    assert choose_hub(facility, state, list(reversed(list(state)))) == choice  # order-independent
