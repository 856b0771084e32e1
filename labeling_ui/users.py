"""Accounts of the labeling app: create, list, reset passwords (stored as argon2 hashes), change roles, remove
accounts, lift login locks. A reset, a role change and a removal end the account's open sessions at once.

Run:    make user NAME=alice ROLE=annotator          (asks for the password twice)
        make user NAME=alice DO=passwd               (DO=role ROLE=admin, DO=remove, DO=unlock)
        python -m labeling_ui.users --db data/labels_tiny.db add alice --role admin
        python -m labeling_ui.users --db data/labels_tiny.db list | passwd alice | role alice --role admin | remove alice | unlock alice
The password comes from the environment variable LABEL_PASSWORD when set (scripts), else from a prompt.
A removed account keeps its labels and its name; it can no longer log in.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from labeling_ui.store import ROLES, Store, StoreError


def _password() -> str:
    if os.environ.get("LABEL_PASSWORD"):
        return os.environ["LABEL_PASSWORD"]
    first = getpass.getpass("password (8+ characters): ")
    if getpass.getpass("again: ") != first:
        raise StoreError("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="labeling store (SQLite file or postgresql:// URL)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="annotator")
    sub.add_parser("list", help="list accounts")
    pw = sub.add_parser("passwd", help="set a new password")
    pw.add_argument("name")
    ro = sub.add_parser("role", help="change an account's role")
    ro.add_argument("name")
    ro.add_argument("--role", choices=ROLES, required=True)
    rm = sub.add_parser("remove", help="close an account (its labels stay)")
    rm.add_argument("name")
    un = sub.add_parser("unlock", help="lift a login lock (too many wrong passwords) and forget the failures")
    un.add_argument("name")
    args = parser.parse_args(argv)
    try:
        store = Store(args.db)
        if args.cmd == "add":
            store.add_annotator(args.name, _password(), args.role)
            print(f"created {args.role} {args.name} in {store.where}")
        elif args.cmd == "passwd":
            store.set_password(args.name, _password())
            print(f"password of {args.name} changed; its open sessions ended")
        elif args.cmd == "role":
            store.set_role(args.name, args.role)
            print(f"{args.name} is now {args.role}; its open sessions ended")
        elif args.cmd == "remove":
            store.remove_annotator(args.name)
            print(f"{args.name} removed (its labels stay); its open sessions ended")
        elif args.cmd == "unlock":
            print(f"{args.name} unlocked" if store.unlock(args.name) else f"{args.name} was not locked")
        else:
            for a in store.annotators(removed=True):
                print(f"{a['name']:24s} {a['role']:10s} {'removed' if a['removed_at'] else ''}".rstrip())
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
