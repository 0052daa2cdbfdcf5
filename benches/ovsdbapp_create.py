#!/usr/bin/env python3
"""What an OpenStack-style script would do instead of ovn-vipd: create N virtual logical switch
ports with ovsdbapp (the OVSDB library Neutron uses), one transaction per port, each waited for.

    ovsdbapp_create.py REMOTE SWITCH COUNT

Prints the seconds the N creations took (the connection and the initial sync are not counted).
Called by `cargo bench --bench nb_sync` with the Python of target/py, where
`scripts/install-deps bench` installs ovsdbapp.
"""
import sys
import time

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl


def virtual_ip(index):
    # The same addresses as the Rust benchmark's floor and ovn-nbctl runs.
    return "10.%d.%d.%d" % (100 + index // 62500, (index // 250) % 250, index % 250 + 2)


def main():
    remote, switch, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    api = impl_idl.OvnNbApiIdlImpl(connection.Connection(idl=idl, timeout=120))
    api.ls_add(switch, may_exist=True).execute(check_error=True)
    started = time.monotonic()
    for index in range(count):
        name = "vip-%d" % index
        api.lsp_add(
            switch,
            name,
            type="virtual",
            options={"virtual-ip": virtual_ip(index)},
            external_ids={"vendor": "ovsdbapp-bench"},
        ).execute(check_error=True)
    print("%.6f" % (time.monotonic() - started))


if __name__ == "__main__":
    main()
