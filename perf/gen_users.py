#!/usr/bin/env python3
"""Generate N test users for the REGISTER benchmarks and everything needed to provision them.

usage: gen_users.py [--n 2000] [--prefix user] [--realm sbc.test] [--out DIR]

Writes into DIR (default /tmp/sipedge-perf-users, outside the repo):
  users.csv         sipp injection file (-inf): SEQUENTIAL header, then
                    `user;[authentication username=user password=pw]`; also read by sipedge-loadgen --users
  credentials.txt   `user password realm` per line, for perf/provision.sh (sipedge CLI, one process per user)
  credentials.json  the same as one JSON list for the bulk API: POST /api/v1/credentials (SPEC §4, seed 003)
  dbtext/ha1, dbtext/version
                    Kamailio htable (db_text) of HA1 = md5(user:realm:password), the format of the reference
                    kit's registrar.cfg, so Kamailio is measured with the very same users
Users are <prefix>%05d with password pw%05dx (deterministic: reruns give the same files).
No SQL is written for sipedge: its store schema belongs to the server; provision through its CLI or API.
"""
import argparse, hashlib, json, os

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--prefix", default="user")
ap.add_argument("--realm", default="sbc.test")
ap.add_argument("--out", default="/tmp/sipedge-perf-users")
a = ap.parse_args()
if a.n < 1:
    ap.error("--n must be >= 1")

users = [(f"{a.prefix}{i:05d}", f"pw{i:05d}x") for i in range(a.n)]
os.makedirs(os.path.join(a.out, "dbtext"), exist_ok=True)

with open(os.path.join(a.out, "users.csv"), "w") as f:
    f.write("SEQUENTIAL\n")
    for u, p in users:
        f.write(f"{u};[authentication username={u} password={p}]\n")

with open(os.path.join(a.out, "credentials.txt"), "w") as f:
    for u, p in users:
        f.write(f"{u} {p} {a.realm}\n")

with open(os.path.join(a.out, "credentials.json"), "w") as f:
    json.dump([{"username": u, "password": p, "realm": a.realm} for u, p in users], f)

ha1 = lambda u, p: hashlib.md5(f"{u}:{a.realm}:{p}".encode()).hexdigest()
with open(os.path.join(a.out, "dbtext", "ha1"), "w") as f:
    f.write("key_name(str) key_type(int) value_type(int) key_value(str) expires(int)\n")
    for u, p in users:
        f.write(f"{u}:0:0:{ha1(u, p)}:0\n")
with open(os.path.join(a.out, "dbtext", "version"), "w") as f:
    f.write("table_name(str) table_version(int)\nha1:2\n")

print(f"{a.n} users ({users[0][0]}..{users[-1][0]}, realm {a.realm}) written to {a.out}/: "
      "users.csv credentials.txt credentials.json dbtext/")
