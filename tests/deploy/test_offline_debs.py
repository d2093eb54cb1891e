"""Hosts without internet: every Debian package an apt task installs is in bin/lib/debian-packages.txt
(what bin/fetch-debs gathers), and the offline apt source is in place before the first apt task."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from deploy_support import REPO

PACKAGE_LIST = REPO / "bin" / "lib" / "debian-packages.txt"
FETCH_DEBS = REPO / "bin" / "fetch-debs"
APT_MODULES = {"ansible.builtin.apt", "apt"}
# Task files whose apt tasks run on the hosts besides the roles': the host tests' stand-ins.
EXTRA_TASK_FILES = [REPO / "tests" / "hosts" / "standins.yml"]
# Not Debian packages: MongoDB's own repository. Hosts without internet get them from
# mongodb_package_src (.deb files on the control node), not from bin/fetch-debs.
NOT_DEBIAN = {"mongodb-org-server", "mongodb-mongosh"}
JINJA = re.compile(r"{{(.*?)}}", re.S)
IDENTIFIER = re.compile(r"\b[a-z][a-z0-9_]*\b")


def listed_packages(text: str) -> set[str]:
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return {n for n in names if n}


def tasks_of(items: Any) -> Iterator[dict[str, Any]]:
    """Every task of a task file or play list, blocks and plays' task sections included."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        for section in ("block", "rescue", "always", "pre_tasks", "tasks", "post_tasks", "handlers"):
            yield from tasks_of(item.get(section))
        yield item


def apt_names(task: dict[str, Any]) -> list[Any]:
    """What an apt task installs (its name/pkg/package argument), [] for removals and local .deb files."""
    for module in APT_MODULES & task.keys():
        args = task[module]
        if not isinstance(args, dict) or args.get("state") in ("absent", "build-dep"):
            return []
        value = args.get("name", args.get("pkg", args.get("package")))
        if value is None:
            return []
        return value if isinstance(value, list) else [value]
    return []


def resolve(value: Any, variables: dict[str, Any], where: str) -> set[str]:
    """Package names of one apt name value: literals, {{ variable }} (from the roles' defaults and
    the site's group_vars), literals with a version suffix template (name{{ '=' ~ v }}) and
    expressions over package lists."""
    if isinstance(value, list):
        return set().union(*(resolve(v, variables, where) for v in value)) if value else set()
    if not isinstance(value, str):
        raise AssertionError(f"{where}: apt name {value!r} is neither a string nor a list")
    literal = JINJA.sub("", value).strip()
    if literal:
        return {literal}
    whole = re.fullmatch(r"{{\s*([a-z][a-z0-9_]*)\s*}}", value.strip())
    if whole and whole[1] in variables:
        return resolve(variables[whole[1]], variables, f"{where} ({whole[1]})")
    # An expression (a version pin, a choice): the package lists it names.
    found: set[str] = set()
    for expression in JINJA.findall(value):
        for name in IDENTIFIER.findall(expression):
            if isinstance(variables.get(name), list):
                found |= resolve(variables[name], variables, f"{where} ({name})")
    if not found:
        raise AssertionError(f"{where}: cannot tell which packages {value!r} installs: extend this test")
    return found


def role_variables() -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for path in [*sorted(REPO.glob("roles/*/defaults/main.yml")), *sorted(REPO.glob("inventory/group_vars/all/*.yml"))]:
        variables.update(yaml.safe_load(path.read_text()) or {})
    return variables


def installed_by_tasks(files: list[Path], variables: dict[str, Any]) -> dict[str, str]:
    """package name -> the task file that installs it."""
    packages: dict[str, str] = {}
    for path in files:
        where = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        for task in tasks_of(yaml.safe_load(path.read_text())):
            for value in apt_names(task):
                for name in resolve(value, variables, f"{where}: {task.get('name', '?')}"):
                    packages.setdefault(name, where)
    return packages


def missing_from_list(files: list[Path], variables: dict[str, Any], listed: set[str]) -> dict[str, str]:
    return {n: w for n, w in installed_by_tasks(files, variables).items() if n not in listed | NOT_DEBIAN}


def task_files() -> list[Path]:
    return sorted(REPO.glob("roles/*/tasks/*.yml")) + [p for p in EXTRA_TASK_FILES if p.exists()]


def test_every_package_an_apt_task_installs_is_fetched() -> None:
    listed = listed_packages(PACKAGE_LIST.read_text())
    variables = role_variables()
    installed = installed_by_tasks(task_files(), variables)
    # The parser sees the roles' apt tasks (literal, from defaults, with a version template).
    assert {"python3-apt", "python3-venv", "rabbitmq-server", "polkitd", "prometheus", "python3-boto3"} <= set(
        installed
    ), sorted(installed)
    missing = missing_from_list(task_files(), variables, listed)
    assert missing == {}, f"add these to {PACKAGE_LIST.relative_to(REPO)} (and run bin/fetch-debs): {missing}"


def test_a_package_missing_from_the_list_is_reported(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.yml"
    tasks.write_text(
        yaml.safe_dump(
            [
                {"name": "a", "ansible.builtin.apt": {"name": "{{ extra_packages }}", "state": "present"}},
                {"block": [{"name": "b", "apt": {"name": ["curl", "jq{{ '=' ~ v if v else '' }}"]}}]},
                {"name": "c", "ansible.builtin.apt": {"name": "nginx", "state": "absent"}},
                {"name": "d", "ansible.builtin.apt": {"deb": "/tmp/x.deb"}},
            ]
        )
    )
    missing = missing_from_list([tasks], {"extra_packages": ["htop"]}, {"curl"})
    assert sorted(missing) == ["htop", "jq"]


def test_the_list_names_each_package_once() -> None:
    names = [line.split("#", 1)[0].strip() for line in PACKAGE_LIST.read_text().splitlines()]
    names = [n for n in names if n]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", n) for n in names), names
    assert "curl" in names  # the host tests' checks use it on the hosts


def test_the_offline_source_comes_before_the_first_apt_task() -> None:
    """Every role depends on mlstack, whose main.yml runs first in each play: the offline source
    must be set up there before any apt task, and offline_debs.yml itself must not use apt (the
    apt module needs python3-apt, which comes from that source)."""
    main = yaml.safe_load((REPO / "roles/mlstack/tasks/main.yml").read_text())
    imports = [i for i, t in enumerate(main) if t.get("ansible.builtin.import_tasks") == "offline_debs.yml"]
    apts = [i for i, t in enumerate(main) if APT_MODULES & t.keys()]
    assert imports and apts and imports[0] < apts[0]
    assert main[imports[0]]["when"] == "mlstack_deb_src | length > 0"
    offline = yaml.safe_load((REPO / "roles/mlstack/tasks/offline_debs.yml").read_text())
    assert not [t for t in tasks_of(offline) if APT_MODULES & t.keys()]
    for role in (REPO / "roles").iterdir():
        if role.name != "mlstack":
            meta = yaml.safe_load((role / "meta/main.yml").read_text())
            assert {"role": "mlstack"} in meta["dependencies"], role.name


def test_fetch_debs_refuses_another_release(tmp_path: Path) -> None:
    """bin/fetch-debs gathers the hosts' release only: on another system it stops before fetching."""
    os_release = tmp_path / "os-release"
    os_release.write_text('PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nVERSION_CODENAME=noble\n')
    dest = tmp_path / "debs"
    script = 'mount --bind "$1" /etc/os-release && exec "$2" "$3"'
    args = ["sh", str(os_release), str(FETCH_DEBS), str(dest)]
    result = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "must run on Debian 12; this machine is Ubuntu 24.04 LTS" in result.stderr
    assert not dest.exists()
