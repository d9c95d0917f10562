import pytest
from hypothesis import given
from hypothesis import strategies as st

from kerub_tui.core.names import InvalidName, check_address, check_name, check_user

HOSTILE = [
    "", " ", "a b", "x;rm -rf /", "$(reboot)", "`id`", "a|b", "a&b", "a>b", "a<b", "a'b", 'a"b', "a\\b",
    "a/b", "../etc", "..", ".hidden", "-rf", "a\nb", "a\tb", "a\x00b", "é", "a*", "a?", "a{b}", "a[0]",
    "x" * 64, "name\u202e", "a..b",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_refused_with_a_reason(name):
    with pytest.raises(InvalidName) as error:
        check_name(name, "VM name")
    message = str(error.value)
    assert message.startswith("VM name")
    assert "\n" not in message.replace("\\n", "")


@pytest.mark.parametrize("name", ["web1", "a", "db-01.prod", "A_b-c.d", "0", "x" * 63])
def test_good_names_accepted(name):
    assert check_name(name) == name


def test_messages_say_what_is_wrong():
    with pytest.raises(InvalidName, match="must not be empty"):
        check_name("")
    with pytest.raises(InvalidName, match=r"too long \(64 characters, at most 63\)"):
        check_name("x" * 64)
    with pytest.raises(InvalidName, match="contains ';'"):
        check_name("a;b")
    with pytest.raises(InvalidName, match="contains a space"):
        check_name("a b")
    with pytest.raises(InvalidName, match="start with a letter or digit"):
        check_name("-rf")


@given(st.text(max_size=80))
def test_any_accepted_name_is_shell_and_path_safe(text):
    try:
        name = check_name(text)
    except InvalidName:
        return
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert not name.startswith(("-", ".")) and ".." not in name and "/" not in name


@pytest.mark.parametrize("address", ["127.0.0.2", "::1", "host.example.org", "lab1", "fe80::1"])
def test_addresses_accepted(address):
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["", "a b", "-oProxyCommand=x", "h;id", "a..b", "x" * 300, "host_name"])
def test_bad_addresses_refused(address):
    with pytest.raises(InvalidName):
        check_address(address)


@pytest.mark.parametrize("user", ["root", "kerub", "_svc", "a.b-c"])
def test_users(user):
    assert check_user(user) == user


@pytest.mark.parametrize("user", ["", "Root", "-u", "a b", "a;b", "x" * 40])
def test_bad_users(user):
    with pytest.raises(InvalidName):
        check_user(user)
