#!/usr/bin/env python3
"""A model of the gateway's ticket refreshes, to choose the TGT renewal point.

Not a measurement (bench/gateway storm is, against the lab's KDC): a queue
model. N users keep asking for their ticket; a ticket is refreshed at a random
point between r_lo and r_hi of its usable life (its life less a tenth, the
Cache's margin for short tickets); the KDC answers one refresh (S4U2Self and
S4U2Proxy) at a time at `cap` exchanges a second; a ticket ends no later than
the service TGT it was issued from; the TGT is renewed once a random fraction
between tgt_lo and tgt_hi of its life has passed (and at least `floor` seconds
before its end). It prints, for each policy, the exchanges per user per
lifetime and how many refreshes came after their ticket's margin (the
requests that then wait for the KDC).

    python3 bench/refresh_model.py
"""
import heapq
import random


def model(n=10000, life=300.0, cap=150.0, tgt_lo=0.75, tgt_hi=0.85, floor=120.0,
          r_lo=0.8, r_hi=0.9, warm=200.0, span=900.0, seed=1):
    rnd = random.Random(seed)
    tgt_end = life

    def renew_at(start):
        return min(start + life * rnd.uniform(tgt_lo, tgt_hi), start + life - floor)

    renew = renew_at(0.0)
    due = [(rnd.uniform(0, warm), u) for u in range(n)]  # first requests
    heapq.heapify(due)
    kdc_free, per_refresh = 0.0, 2.0 / cap
    issued, ends = {}, {}
    exchanges = late = logins = 0
    while due:
        t, u = heapq.heappop(due)
        if t > warm + span:
            break
        if t >= renew:  # the TGT is renewed on its first use past the point
            tgt_end, renew, logins = t + life, renew_at(t), logins + 1
        done = max(t, kdc_free) + per_refresh
        kdc_free = done
        if t > warm:
            exchanges += 2
            if u in ends and done > ends[u] - (ends[u] - issued[u]) / 10:
                late += 1
        end = min(tgt_end, done + life)
        issued[u], ends[u] = done, end
        usable = (end - done) * 0.9
        heapq.heappush(due, (done + max(1.0, usable * rnd.uniform(r_lo, r_hi)), u))
    return exchanges / n / (span / life), late, logins


if __name__ == "__main__":
    print("10,000 users, 5-minute tickets, a KDC answering 150 exchanges/s, 15 minutes after a 200 s warm-up")
    print("| TGT renewed at | refresh at | exchanges per user per lifetime | refreshes after the margin | TGT logins |")
    print("|---|---|---|---|---|")
    for tgt, ref in [((0.75, 0.85), (0.8, 0.9)), ((0.25, 0.35), (0.8, 0.9)), ((0.1, 0.2), (0.8, 0.9)),
                     ((0.75, 0.85), (0.6, 0.9)), ((0.1, 0.2), (0.7, 0.9))]:
        per, late, logins = model(tgt_lo=tgt[0], tgt_hi=tgt[1], r_lo=ref[0], r_hi=ref[1])
        print(f"| {tgt[0]:.0%}-{tgt[1]:.0%} | {ref[0]:.0%}-{ref[1]:.0%} | {per:.2f} | {late} | {logins} |")
