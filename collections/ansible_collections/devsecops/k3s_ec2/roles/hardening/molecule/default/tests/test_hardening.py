"""What the hardening role must leave on a host, checked on the host itself."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SKIPPED = "/var/lib/misc/hardening-skipped-controls"
K3S_SYSCTL = {
    "vm.panic_on_oom": "0",
    "vm.overcommit_memory": "1",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}
WEAK_ALGORITHMS = (
    "cbc",
    "sha1",
    "md5",
    "nistp",
    "3des",
    "arcfour",
    "ssh-rsa,",
    "group1,",
    "group14",
)


def sshd_settings(host) -> dict[str, str]:
    """`sshd -T` as a dict; keys sshd prints once per value (allowgroups) are joined."""
    out = host.check_output("sshd -T -C user=operator1,host=localhost,addr=127.0.0.1")
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, value = line.partition(" ")[::2]
        settings[key] = f"{settings[key]} {value}" if key in settings else value
    return settings


def in_container(host) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


def skipped(host) -> str:
    return host.file(SKIPPED).content_string


def test_sshd_effective_settings(host):
    cfg = sshd_settings(host)
    expected = {
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "pubkeyauthentication": "yes",
        "authenticationmethods": "publickey",
        "permitemptypasswords": "no",
        "maxauthtries": "3",
        "logingracetime": "30",
        "clientaliveinterval": "300",
        "clientalivecountmax": "2",
        "allowagentforwarding": "no",
        "allowtcpforwarding": "no",
        "x11forwarding": "no",
        "maxsessions": "2",
        "permittunnel": "no",
        "allowgroups": "sudo root",
        "banner": "/etc/issue.net",
        "loglevel": "VERBOSE",
    }
    assert {k: cfg.get(k) for k in expected} == expected


def test_sshd_offers_only_modern_algorithms(host):
    cfg = sshd_settings(host)
    for key in ("kexalgorithms", "ciphers", "macs", "hostkeyalgorithms"):
        offered = cfg[key] + ","
        assert not [w for w in WEAK_ALGORITHMS if w in offered], f"{key}: {cfg[key]}"
    assert cfg["kexalgorithms"].split(",")[0].startswith(("mlkem768", "sntrup761"))
    host_keys = host.check_output("sshd -T | awk '$1 == \"hostkey\" {print $2}'").split()
    assert host_keys == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]


def test_login_negotiates_a_post_quantum_key_exchange(host, ssh_client):
    result = ssh_client("operator1", "-v")
    assert result.rc == 0, result.stderr
    negotiated = next(
        line.split()[-1] for line in result.stderr.splitlines() if "kex: algorithm:" in line
    )
    assert negotiated.startswith(("mlkem768x25519", "sntrup761x25519")), negotiated


def test_classic_only_client_follows_the_fallback_setting(host, ssh_client):
    """bookworm keeps the default classic fallback; trixie drops it (molecule.yml)."""
    dropped = host.backend.name == "hardening-trixie"
    offered = sshd_settings(host)["kexalgorithms"].split(",")
    classic = [kex for kex in offered if not kex.startswith(("mlkem768", "sntrup761"))]
    assert classic == ([] if dropped else ["curve25519-sha256", "curve25519-sha256@libssh.org"])
    result = ssh_client("operator1", "-o KexAlgorithms=curve25519-sha256")
    if dropped:
        assert result.rc == 255
        assert "no matching key exchange method" in result.stderr
    else:
        assert result.rc == 0, result.stderr


def test_weak_moduli_removed(host):
    sizes = host.check_output("awk '$1 !~ /^#/ {print $5}' /etc/ssh/moduli").split()
    assert sizes, "moduli file is empty"
    assert min(int(s) for s in sizes) >= 3071


def test_key_login_works_for_allowed_user(host, ssh_client):
    result = ssh_client("operator1", command="'id -un; umask; ulimit -Hc'")
    assert result.rc == 0, result.stderr
    user, umask, core_limit = result.stdout.split()
    assert user == "operator1"
    # pam_umask applies login.defs' 027; with private user groups it relaxes the group
    # digit to the owner's (007), but "other" gets nothing either way.
    assert umask in ("0027", "0007")
    assert core_limit == "0"


def test_root_login_refused_even_with_valid_key(host, ssh_client):
    result = ssh_client("root")
    assert result.rc == 255
    assert "Permission denied" in result.stderr


def test_user_outside_allow_groups_refused(host, ssh_client):
    result = ssh_client("outsider")
    assert result.rc == 255
    assert "Permission denied" in result.stderr


def test_password_and_keyboard_interactive_not_offered(host, ssh_client):
    result = ssh_client(
        "operator1",
        "-o PubkeyAuthentication=no",
        "-o PreferredAuthentications=password,keyboard-interactive",
    )
    assert result.rc == 255
    assert "Permission denied (publickey)" in result.stderr


@pytest.mark.parametrize(
    "option",
    [
        "-o Ciphers=aes128-cbc",
        "-o HostKeyAlgorithms=ecdsa-sha2-nistp256",
        "-o KexAlgorithms=diffie-hellman-group14-sha1",
        # An AEAD cipher needs no MAC, so a CTR cipher forces the MAC to be negotiated.
        "-o Ciphers=aes256-ctr -o MACs=hmac-sha1",
    ],
)
def test_weak_algorithm_negotiation_refused(host, ssh_client, option):
    result = ssh_client("operator1", option)
    assert result.rc == 255
    assert "no matching" in result.stderr or "Unable to negotiate" in result.stderr


def test_banner_shown_before_login(host, ssh_client):
    result = ssh_client("operator1", "-o LogLevel=INFO")
    assert "Authorised access only" in result.stderr


def test_ssh_service_enabled_and_running(host):
    ssh = host.service("ssh")
    assert ssh.is_enabled
    assert ssh.is_running


def test_sysctl_file_has_k3s_and_cis_values(host):
    conf = host.file("/etc/sysctl.d/90-hardening.conf")
    assert conf.mode == 0o644
    lines = {
        k.strip(): v.strip()
        for k, v in (line.split("=", 1) for line in conf.content_string.splitlines() if "=" in line)
    }
    for key, value in K3S_SYSCTL.items():
        assert lines.get(key) == value, key
    assert lines["net.ipv4.conf.all.accept_redirects"] == "0"
    assert lines["kernel.kptr_restrict"] == "2"


def test_sysctl_applied_where_writable_else_skip_recorded(host):
    writable = host.run("test -w /proc/sys/kernel/panic").rc == 0
    if in_container(host) or not writable:
        assert "sysctl: /etc/sysctl.d/90-hardening.conf written, not applied" in skipped(host)
    else:
        for key, value in K3S_SYSCTL.items():
            assert host.sysctl(key) == int(value), key


def test_k3s_modules_not_disabled(host):
    conf = host.file("/etc/modprobe.d/hardening.conf").content_string
    assert "install cramfs /bin/true" in conf
    assert "install sctp /bin/true" in conf
    for module in ("overlay", "br_netfilter", "nf_conntrack", "vxlan"):
        assert f" {module} " not in f" {conf} ".replace("\n", " ")
    assert "br_netfilter" in host.file("/etc/modules-load.d/hardening-k3s.conf").content_string


@pytest.mark.parametrize(
    ("path", "mode", "group"),
    [
        ("/etc/shadow", 0o640, "shadow"),
        ("/etc/gshadow", 0o640, "shadow"),
        ("/etc/passwd", 0o644, "root"),
        ("/etc/ssh/sshd_config", 0o600, "root"),
        ("/etc/sudoers", 0o440, "root"),
        ("/etc/nftables.conf", 0o600, "root"),
        ("/etc/audit/rules.d/hardening.rules", 0o640, "root"),
    ],
)
def test_sensitive_file_modes(host, path, mode, group):
    f = host.file(path)
    assert f.exists
    assert f.user == "root"
    assert f.group == group
    assert f.mode == mode


def test_login_defs_and_password_policy(host):
    defs = dict(
        line.split(None, 1)
        for line in host.file("/etc/login.defs").content_string.splitlines()
        if line.strip() and not line.startswith("#") and len(line.split(None, 1)) == 2
    )
    assert defs["PASS_MAX_DAYS"].strip() == "365"
    assert defs["PASS_MIN_DAYS"].strip() == "1"
    assert defs["UMASK"].strip() == "027"
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string
    policy = host.file("/etc/security/pwquality.conf.d/hardening.conf").content_string
    assert "minlen = 14" in policy
    assert "enforce_for_root" in policy


def test_core_dumps_disabled(host):
    limits = host.file("/etc/security/limits.d/10-hardening-core.conf").content_string
    assert "hard    core    0" in limits
    assert "Storage=none" in host.file("/etc/systemd/coredump.conf.d/hardening.conf").content_string


def test_unneeded_packages_absent_needed_present(host):
    for name in ("telnet", "rsh-client", "nis", "xinetd"):
        assert not host.package(name).is_installed, name
    for name in ("auditd", "nftables", "unattended-upgrades", "libpam-pwquality"):
        assert host.package(name).is_installed, name


def test_journal_is_persistent(host):
    journal = host.file("/var/log/journal")
    assert journal.is_directory
    assert host.service("systemd-journald").is_running
    # The running journald writes its files under /var/log/journal, not /run/log/journal.
    out = host.check_output("journalctl --header 2>/dev/null | grep 'File path' || true")
    assert "/var/log/journal/" in out


def test_unattended_upgrades_enabled(host):
    assert host.service("unattended-upgrades").is_enabled
    assert host.service("unattended-upgrades").is_running
    assert host.service("apt-daily-upgrade.timer").is_enabled
    # apt-config prints the merged configuration, so a later file cannot silently override it.
    merged = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in merged
    periodic = host.file("/etc/apt/apt.conf.d/52hardening-unattended-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    # The security archive is an apt source, so there is something to upgrade from.
    targets = host.check_output("apt-get indextargets --format '$(SITE) $(RELEASE)'")
    assert "-security" in targets


def test_auditd_enabled_and_running_or_skip_recorded(host):
    auditd = host.service("auditd")
    assert auditd.is_enabled
    rules = host.file("/etc/audit/rules.d/hardening.rules").content_string
    assert "-w /etc/shadow -p wa -k identity" in rules
    if host.run("auditctl -s").rc == 0 and not in_container(host):
        assert auditd.is_running
        assert "-w /etc/shadow" in host.check_output("auditctl -l")
    else:
        assert "auditd: enabled and rules written" in skipped(host)


def test_firewall_loaded_or_skip_recorded(host):
    assert host.service("nftables").is_enabled
    if host.run("nft list tables").rc == 0:
        assert host.service("nftables").is_running
        ruleset = host.check_output("nft list table inet hardening")
        assert "policy drop" in ruleset
    else:
        assert "nftables: enabled and /etc/nftables.conf written, not loaded" in skipped(host)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="loading the ruleset in a scratch network namespace needs root and nft",
)
def test_firewall_ruleset_loads_in_a_scratch_namespace(host, tmp_path):
    """The ruleset the host could not load is loaded by the real nft, in a new netns."""
    ruleset = tmp_path / "nftables.conf"
    ruleset.write_text(host.file("/etc/nftables.conf").content_string + "\n")
    f = str(ruleset)
    result = subprocess.run(
        # Loaded twice: a reload must replace the table, not fail on or duplicate it. Without
        # /etc/protocols (a minimal image has no netbase) every protocol must be an nft keyword.
        [
            "unshare",
            "--net",
            "--mount",
            "sh",
            "-c",
            "mount --bind /dev/null /etc/protocols"
            f" && nft -f {f} && nft -f {f} && nft list table inet hardening",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout
    assert "policy drop" in listing
    expected_rules = (
        "tcp dport 22 accept",
        "tcp dport 6443 accept",
        "30000-32767",
        "udp dport 8472",
        "10250",
        "2379-2380",
    )
    for expected in expected_rules:
        assert expected in listing, expected
    # nft merges the adjacent pod (10.42/16) and service (10.43/16) ranges into one prefix.
    assert "ip saddr { 10.42.0.0/15 } accept" in listing


def test_fail2ban_bans_a_source_after_failed_logins(host):
    """Failed logins from outside the host (this machine) get their source banned."""
    address = subprocess.run(
        ["podman", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", host.backend.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert host.service("fail2ban").is_running
    jail = host.check_output("fail2ban-client status sshd")
    assert "Currently banned:\t0" in jail, jail
    for _attempt in range(12):
        subprocess.run(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
                f"nosuchuser@{address}",
                "true",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        jail = host.check_output("fail2ban-client status sshd")
        if "Currently banned:\t1" in jail:
            break
    banned = host.check_output("fail2ban-client get sshd banned")
    host.run("fail2ban-client unban --all")
    assert "Currently banned:\t1" in jail, jail
    assert banned.strip("[]' \n") != "", banned


def test_aide_baseline_reports_new_files_but_not_k3s_state(host):
    assert host.file("/var/lib/aide/aide.db").exists
    probes = ("/usr/local/sbin/hardening-aide-probe", "/var/lib/rancher/hardening-aide-probe")
    host.run_expect([0], "mkdir -p /var/lib/rancher && touch " + " ".join(probes))
    try:
        check = host.run(
            "aide --config=/etc/aide/aide.conf --check --limit '^/(usr/local/sbin|var/lib/rancher)'"
        )
    finally:
        host.run("rm -f " + " ".join(probes))
    # AIDE's exit code is a bit mask: 1 means files were added; 14 and up are errors.
    assert check.rc & 1 and check.rc < 14, check.stdout + check.stderr
    assert probes[0] in check.stdout
    assert probes[1] not in check.stdout


def test_compilers_run_for_root_only(host):
    assembler = host.check_output('readlink -f "$(command -v as)"')
    assert host.file(assembler).mode == 0o750
    assert assembler in host.check_output("dpkg-statoverride --list")
    refused = host.run("runuser -u operator1 -- as --version")
    assert refused.rc != 0
    assert "Permission denied" in refused.stderr
    assert host.run("as --version").rc == 0


def test_idle_shells_time_out_and_users_cannot_lift_it(host):
    assert host.check_output("runuser -l operator1 -c 'echo $TMOUT'") == "900"
    assert host.run("runuser -l operator1 -c 'TMOUT=0'").rc != 0
    # Without PAM (podman exec), only the login shell's profile sets the core limit.
    assert host.check_output("bash -lc 'ulimit -c'") == "0"


def test_sysstat_debsums_and_time_sync_are_on(host):
    assert 'ENABLED="true"' in host.file("/etc/default/sysstat").content_string
    assert host.service("sysstat").is_enabled
    # On systemd the timer, not cron, collects the samples.
    assert host.service("sysstat-collect.timer").is_enabled
    assert host.service("sysstat-collect.timer").is_running
    assert "CRON_CHECK=weekly" in host.file("/etc/default/debsums").content_string
    assert host.file("/etc/cron.weekly/debsums").exists
    assert host.service("cron").is_running
    assert host.service("chrony").is_enabled
    if in_container(host):
        assert "chrony: enabled, not started" in skipped(host)
    else:
        assert host.service("chrony").is_running
