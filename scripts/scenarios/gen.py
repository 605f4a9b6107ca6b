#!/usr/bin/env python3
"""Writes the money-rule scenarios 22-39 of fixtures/scenarios/ (issue 13; 36-39 since; 40-44 the
refund rules, issue 25): each stream and the
actions a merchant expects, written down here by hand from the rule definitions in docs/rules.md
(never copied from payrules' own output). Re-running it rewrites the same files.

Usage: python3 scripts/scenarios/gen.py
"""
import json
import os
import uuid

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "scenarios")
DAY = "2026-11-20T"
NS = uuid.UUID("6f1b2c0e-8f4a-4c39-9a55-2f7d0b1e9c01")


def uid(name):
    return str(uuid.uuid5(NS, name))


def ts(hms):
    return f"{DAY}{hms}.000Z"


def money(cents, cur="EUR"):
    return {"type": "centPrecision", "currencyCode": cur, "centAmount": cents, "fractionDigits": 2}


class Stream:
    """Messages of one scenario; versions count per resource in commit order."""

    def __init__(self, name):
        self.name = name
        self.lines = []
        self.versions = {}
        self.expected = []

    def _msg(self, typ, rid, type_id, at, fields, msg_name):
        v = self.versions.get(rid, 0) + 1
        self.versions[rid] = v
        m = {
            "notificationType": "Message",
            "projectKey": "acme-eu-prod",
            "id": uid(f"{self.name}/{msg_name}"),
            "version": 1,
            "sequenceNumber": v,
            "resource": {"typeId": type_id, "id": rid},
            "resourceVersion": v,
            "type": typ,
            **fields,
            "createdAt": ts(at),
            "lastModifiedAt": ts(at),
        }
        self.lines.append(m)
        return m["id"]

    def payment(self, p, at, amount=5000, txs=(), cur="EUR", interface="checkout-adyen"):
        transactions = [
            {"id": uid(f"{self.name}/{p}/{t}"), "type": kind, "amount": money(cents, cur), "state": state}
            for (t, kind, cents, state) in txs
        ]
        body = {
            "id": uid(f"{self.name}/{p}"),
            "version": 1,
            "createdAt": ts(at),
            "lastModifiedAt": ts(at),
            "amountPlanned": money(amount, cur),
            "paymentMethodInfo": {"paymentInterface": interface, "method": "scheme"},
            "paymentStatus": {},
            "transactions": transactions,
            "interfaceInteractions": [],
        }
        return self._msg("PaymentCreated", body["id"], "payment", at, {"payment": body}, f"{p}/created")

    def tx_added(self, p, t, kind, cents, state, at, cur="EUR"):
        tx = {"id": uid(f"{self.name}/{p}/{t}"), "type": kind, "amount": money(cents, cur), "state": state}
        return self._msg("PaymentTransactionAdded", uid(f"{self.name}/{p}"), "payment", at,
                         {"transaction": tx}, f"{p}/{t}/added")

    def tx_state(self, p, t, state, at):
        return self._msg("PaymentTransactionStateChanged", uid(f"{self.name}/{p}"), "payment", at,
                         {"transactionId": uid(f"{self.name}/{p}/{t}"), "state": state},
                         f"{p}/{t}/{state}")

    def order(self, o, at, total, payments, gross=None, state="Open", shipment="Pending",
              typ="OrderCreated", number=None, lines=()):
        body = {
            "type": "Order",
            "id": uid(f"{self.name}/{o}"),
            "version": 1,
            "createdAt": ts(at),
            "lastModifiedAt": ts(at),
            "orderNumber": number or f"{self.name[:2]}{len(self.lines):04d}",
            "totalPrice": money(total),
            "orderState": state,
            "paymentState": "Pending",
            "paymentInfo": {"payments": [{"typeId": "payment", "id": uid(f"{self.name}/{p}")} for p in payments]},
            "lineItems": [
                {"id": uid(f"{self.name}/{o}/{l}"), "quantity": qty, "totalPrice": money(cents)}
                for (l, qty, cents) in lines
            ],
        }
        if shipment is not None:
            body["shipmentState"] = shipment
        if gross is not None:
            body["taxedPrice"] = {"totalNet": money(total), "totalGross": money(gross),
                                  "totalTax": money(gross - total)}
        return self._msg(typ, body["id"], "order", at, {"order": body}, f"{o}/created")

    def order_state(self, o, state, at):
        return self._msg("OrderStateChanged", uid(f"{self.name}/{o}"), "order", at,
                         {"orderState": state}, f"{o}/{state}")

    def shipment(self, o, state, at):
        return self._msg("OrderShipmentStateChanged", uid(f"{self.name}/{o}"), "order", at,
                         {"shipmentState": state}, f"{o}/shipment/{state}")

    def edit(self, o, total, gross, at):
        excerpt = {"totalPrice": money(total), "version": self.versions.get(uid(f"{self.name}/{o}"), 0) + 1}
        if gross is not None:
            excerpt["taxedPrice"] = {"totalNet": money(total), "totalGross": money(gross),
                                     "totalTax": money(gross - total)}
        result = {"type": "Applied", "appliedAt": ts(at), "excerptBeforeEdit": excerpt,
                  "excerptAfterEdit": excerpt}
        edit = {"typeId": "order-edit", "id": uid(f"{self.name}/{o}/edit")}
        return self._msg("OrderEditApplied", uid(f"{self.name}/{o}"), "order", at,
                         {"edit": edit, "result": result}, f"{o}/edit/{total}")

    def return_item(self, o, item, line, qty, shipment="Returned", payment="Initial", rev=""):
        """A LineItemReturnItem; `rev` makes a new id for the same item (setReturnInfo)."""
        return {"type": "LineItemReturnItem", "id": uid(f"{self.name}/{o}/ri/{item}{rev}"),
                "quantity": qty, "lineItemId": uid(f"{self.name}/{o}/{line}"),
                "shipmentState": shipment, "paymentState": payment,
                "createdAt": ts("10:00:00"), "lastModifiedAt": ts("10:00:00")}

    def return_added(self, o, items, at, name):
        info = {"items": items, "returnDate": ts(at)}
        return self._msg("ReturnInfoAdded", uid(f"{self.name}/{o}"), "order", at,
                         {"returnInfo": info}, f"{o}/return/{name}")

    def return_set(self, o, infos, at, name):
        return self._msg("ReturnInfoSet", uid(f"{self.name}/{o}"), "order", at,
                         {"returnInfo": [{"items": items} for items in infos]},
                         f"{o}/return-set/{name}")

    def return_state(self, o, item, state, at, rev=""):
        return self._msg("OrderReturnShipmentStateChanged", uid(f"{self.name}/{o}"), "order", at,
                         {"returnItemId": uid(f"{self.name}/{o}/ri/{item}{rev}"),
                          "returnShipmentState": state}, f"{o}/ri/{item}{rev}/{state}")

    def event(self, typ, at, data, name):
        e = {"notificationType": "Event", "id": uid(f"{self.name}/{name}"), "type": typ,
             "resourceType": "checkout", "data": {"projectKey": "acme-eu-prod", **data},
             "createdAt": ts(at)}
        self.lines.append(e)
        return e["id"]

    def expect(self, action, rule, key_of, p, o, message_id, at):
        pid = uid(f"{self.name}/{p}")
        oid = uid(f"{self.name}/{o}") if o else None
        key = {"release_order": f"release:{oid}", "cancel_payment": f"cancel:{pid}",
               "capture_payment": f"capture:{pid}", "refund_payment": f"refund:{pid}"}[action]
        assert key_of == action
        self.expected.append({"action": action, "rule": rule, "key": key, "payment_id": pid,
                              "order_id": oid, "message_id": message_id, "at": ts(at)})

    def release(self, o, p, message_id, at):
        self.expect("release_order", "release_for_fulfillment", "release_order", p, o, message_id, at)

    def cancel(self, p, rule, message_id, at, order=None):
        self.expect("cancel_payment", rule, "cancel_payment", p, order, message_id, at)

    def capture(self, p, o, message_id, at):
        self.expect("capture_payment", "capture_on_shipment", "capture_payment", p, o, message_id, at)

    def refund(self, p, rule, message_id, at, cents, reason, order=None):
        """A refund; its amount and reason are checked too (tests/it/scenarios.rs)."""
        self.expect("refund_payment", rule, "refund_payment", p, order, message_id, at)
        self.expected[-1]["amount"] = money(cents)
        self.expected[-1]["reason"] = reason

    def line_refund(self, p, o, line, returned, message_id, at, cents):
        """A refund_on_return refund of `returned` units of `line` in all, from P."""
        pid, oid = uid(f"{self.name}/{p}"), uid(f"{self.name}/{o}")
        lid = uid(f"{self.name}/{o}/{line}")
        self.expected.append({"action": "refund_payment", "rule": "refund_on_return",
                              "key": f"refund:{oid}:{lid}:{returned}:{pid}", "payment_id": pid,
                              "order_id": oid, "message_id": message_id, "at": ts(at),
                              "amount": money(cents), "reason": "returned", "line_id": lid,
                              "returned_quantity": returned})

    def write(self, toml=None):
        with open(os.path.join(OUT, f"{self.name}.jsonl"), "w") as f:
            for line in self.lines:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        with open(os.path.join(OUT, f"{self.name}.expected.jsonl"), "w") as f:
            for line in self.expected:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        if toml:
            with open(os.path.join(OUT, f"{self.name}.toml"), "w") as f:
                f.write(toml)


ORPHAN = "cancel_orphaned_authorization"
ON_CANCELLED = "cancel_on_order_cancelled"
REFUND_ORPHAN = "refund_orphaned_charge"
REFUND_ON_CANCELLED = "refund_on_order_cancelled"


def s22():
    # 1. Net prices: the customer pays taxedPrice.totalGross.
    s = Stream("22-net-prices-cover-the-gross-total")
    s.payment("P1", "10:00:00")
    s.tx_added("P1", "a", "Authorization", 10000, "Success", "10:00:01")
    s.order("O1", "10:00:02", 10000, ["P1"], gross=11900)
    s.payment("P2", "10:00:03")
    s.tx_added("P2", "a", "Authorization", 11900, "Pending", "10:00:04")
    s.order("O2", "10:00:05", 10000, ["P2"], gross=11900)
    m = s.tx_state("P2", "a", "Success", "10:00:30")
    s.release("O2", "P2", m, "10:00:30")
    s.write()


def s23():
    # 2. Only an order that can still be fulfilled is released.
    s = Stream("23-only-fulfillable-orders-are-released")
    s.payment("P1", "10:00:00", txs=[("a", "Authorization", 5000, "Success")])
    s.order("O1", "10:00:01", 5000, ["P1"], state="Complete", shipment="Delivered", typ="OrderImported")
    s.payment("P2", "10:00:02", txs=[("a", "Authorization", 5000, "Success")])
    s.order("O2", "10:00:03", 5000, ["P2"], state="Open", shipment="Shipped")
    s.payment("P3", "10:00:04", txs=[("a", "Authorization", 5000, "Success")])
    m = s.order("O3", "10:00:05", 5000, ["P3"], state="Confirmed", shipment="Ready", typ="OrderImported")
    s.release("O3", "P3", m, "10:00:05")
    s.payment("P4", "10:00:06", txs=[("a", "Authorization", 5000, "Success")])
    m = s.order("O4", "10:00:07", 5000, ["P4"], state="Open", shipment=None)
    s.release("O4", "P4", m, "10:00:07")
    s.shipment("O4", "Backorder", "10:00:08")
    s.write()


def s24():
    # 3. One authorization, two open orders: its money counts toward the earlier order only.
    s = Stream("24-one-authorization-two-orders")
    s.payment("P", "10:00:00")
    s.tx_added("P", "a", "Authorization", 5000, "Success", "10:00:01")
    m = s.order("O1", "10:00:02", 5000, ["P"])
    s.release("O1", "P", m, "10:00:02")
    s.order("O2", "10:00:03", 5000, ["P"])
    s.write()


def s25():
    # 4. A cancelled order holds no payment: the replacement order is released.
    s = Stream("25-replacement-order-after-a-cancelled-one")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Pending")])
    s.order("A", "10:00:01", 5000, ["P"])
    s.order_state("A", "Cancelled", "10:00:10")
    s.order("B", "10:00:20", 5000, ["P"])
    m = s.tx_state("P", "a", "Success", "10:00:30")
    s.release("B", "P", m, "10:00:30")
    s.write()


def s26():
    # 5. Re-authorization: amounts, not flags.
    s = Stream("26-re-authorization-after-a-cancel")
    s.payment("P", "10:00:00")
    s.tx_added("P", "a1", "Authorization", 5000, "Success", "10:00:01")
    s.tx_added("P", "c1", "CancelAuthorization", 5000, "Success", "10:00:02")
    s.tx_added("P", "a2", "Authorization", 5000, "Success", "10:00:03")
    m = s.order("O", "10:00:04", 5000, ["P"])
    s.release("O", "P", m, "10:00:04")
    s.write()


def s27():
    # 5. Money received counts; a charge refunded counts for nothing.
    s = Stream("27-gift-card-charge-plus-card-authorization")
    s.payment("G", "10:00:00", amount=2000, interface="checkout-giftcards")
    s.tx_added("G", "c", "Charge", 2000, "Success", "10:00:01")
    s.payment("C", "10:00:02", amount=8000)
    s.tx_added("C", "a", "Authorization", 8000, "Pending", "10:00:03")
    s.order("O1", "10:00:04", 10000, ["G", "C"])
    m = s.tx_state("C", "a", "Success", "10:00:20")
    s.release("O1", "C", m, "10:00:20")
    s.payment("R", "10:01:00", amount=3000)
    s.tx_added("R", "c", "Charge", 3000, "Success", "10:01:01")
    s.tx_added("R", "r", "Refund", 3000, "Success", "10:01:02")
    s.order("O2", "10:01:03", 3000, ["R"])
    s.write()


def s28():
    # 5. Two authorizations on one payment add up.
    s = Stream("28-two-authorizations-on-one-payment")
    s.payment("P", "10:00:00", amount=10000)
    s.order("O", "10:00:01", 10000, ["P"])
    s.tx_added("P", "a1", "Authorization", 5000, "Success", "10:00:02")
    m = s.tx_added("P", "a2", "Authorization", 5000, "Success", "10:00:03")
    s.release("O", "P", m, "10:00:03")
    s.write()


def s29():
    # 6. A CancelAuthorization that failed gives the money back: it enables.
    s = Stream("29-failed-cancel-authorization-enables")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Pending")])
    s.order("O", "10:00:01", 5000, ["P"])
    s.tx_added("P", "c", "CancelAuthorization", 5000, "Pending", "10:00:02")
    s.tx_state("P", "a", "Success", "10:00:03")
    m = s.tx_state("P", "c", "Failure", "10:00:04")
    s.release("O", "P", m, "10:00:04")
    s.write()


def s30():
    # 7. Our own cancel failed: the authorization stands, the late order is released.
    s = Stream("30-our-cancel-failed-then-the-order-arrives")
    s.payment("P", "10:00:00")
    s.tx_added("P", "a", "Authorization", 5000, "Success", "10:00:02")
    s.cancel("P", ORPHAN, None, "10:10:02")
    s.tx_added("P", "c", "CancelAuthorization", 5000, "Pending", "10:10:30")
    s.tx_state("P", "c", "Failure", "10:11:00")
    s.event("CheckoutPaymentCancelAuthorizationFailed", "10:11:01",
            {"payment": {"typeId": "payment", "id": uid(s.name + "/P")},
             "transactionId": uid(s.name + "/P/c")}, "cancel-failed")
    m = s.order("O", "10:12:00", 5000, ["P"])
    s.release("O", "P", m, "10:12:00")
    s.write()


def s31():
    # 8. Checkout's order-creation failure while the authorization is Pending is remembered.
    s = Stream("31-order-creation-failed-while-pending")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Pending")])
    s.event("CheckoutOrderCreationFailed", "10:00:04",
            {"cart": {"typeId": "cart", "id": uid(s.name + "/cart")},
             "payments": [{"typeId": "payment", "id": uid(s.name + "/P")}],
             "errors": [{"code": "OutOfStock", "message": "The item is out of stock."}]}, "failed")
    m = s.tx_state("P", "a", "Success", "10:00:30")
    s.expected.append({"action": "cancel_payment", "rule": ORPHAN, "key": f"cancel:{uid(s.name + '/P')}",
                       "payment_id": uid(s.name + "/P"), "order_id": None, "message_id": m,
                       "at": ts("10:00:30")})
    s.write()


def s32():
    # 9. An order cancelled: its authorization is cancelled at once (also after a release), and
    # one still Pending when the order is cancelled is cancelled when it succeeds.
    s = Stream("32-order-cancelled-cancels-its-authorization")
    s.payment("P1", "10:00:00", txs=[("a", "Authorization", 5000, "Success")])
    m = s.order("O1", "10:00:01", 5000, ["P1"])
    s.release("O1", "P1", m, "10:00:01")
    m = s.order_state("O1", "Cancelled", "10:05:00")
    s.cancel("P1", ON_CANCELLED, m, "10:05:00", order="O1")
    s.payment("P2", "10:05:10", txs=[("a", "Authorization", 7000, "Pending")])
    s.order("O2", "10:05:11", 7000, ["P2"])
    s.order_state("O2", "Cancelled", "10:05:20")
    m = s.tx_state("P2", "a", "Success", "10:05:40")
    s.cancel("P2", ON_CANCELLED, m, "10:05:40", order="O2")
    s.write()


def s33():
    # 10. An order edit changes the total the payments must cover.
    s = Stream("33-order-edit-changes-the-total")
    s.payment("P1", "10:00:00", txs=[("a", "Authorization", 10000, "Pending")])
    s.order("O1", "10:00:01", 12000, ["P1"])
    s.edit("O1", 10000, None, "10:00:02")
    m = s.tx_state("P1", "a", "Success", "10:00:10")
    s.release("O1", "P1", m, "10:00:10")
    s.payment("P2", "10:01:00", txs=[("a", "Authorization", 10000, "Pending")])
    s.order("O2", "10:01:01", 10000, ["P2"], gross=10000)
    s.edit("O2", 10084, 12000, "10:01:02")
    s.tx_state("P2", "a", "Success", "10:01:10")
    s.write()


def s34():
    # 11. A zero-amount authorization reserves nothing: never cancelled.
    s = Stream("34-zero-amount-authorization-is-never-cancelled")
    s.payment("P", "10:00:00", amount=0)
    s.tx_added("P", "a", "Authorization", 0, "Success", "10:00:01")
    s.payment("Q", "10:20:00", amount=100)
    s.write()


def s35():
    # Capture on shipment (opt-in): each allocated payment's open authorization is captured.
    s = Stream("35-capture-on-shipment")
    s.payment("G", "10:00:00", amount=2000, interface="checkout-giftcards")
    s.tx_added("G", "c", "Charge", 2000, "Success", "10:00:01")
    s.payment("C", "10:00:02", amount=8000, txs=[("a", "Authorization", 8000, "Success")])
    m = s.order("O", "10:00:03", 10000, ["G", "C"])
    s.release("O", "C", m, "10:00:03")
    s.shipment("O", "Ready", "10:30:00")
    m = s.shipment("O", "Shipped", "11:00:00")
    s.capture("C", "O", m, "11:00:00")
    s.shipment("O", "Delivered", "12:00:00")
    s.write(toml="[rules.capture_on_shipment]\nenabled = true\non = \"Shipped\"\n")


def s36():
    # A Charge a connector added (Initial) or is waiting on (Pending) when the grace period runs
    # out: too late to cancel, and not known yet whether the money arrives. The check is made
    # again a grace period later: P's capture failed meanwhile, so its authorization (no order)
    # is cancelled then; S's capture succeeded, so nothing is cancelled.
    s = Stream("36-grace-check-waits-for-a-capture-in-flight")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Success")])
    s.payment("S", "10:00:01", txs=[("a", "Authorization", 5000, "Success")])
    s.tx_added("P", "c", "Charge", 5000, "Initial", "10:00:05")
    s.tx_added("S", "c", "Charge", 5000, "Pending", "10:00:06")
    s.payment("Q", "10:15:00", amount=100)  # P and S checked at 10:10: again at 10:20, 10:30
    s.tx_state("P", "c", "Failure", "10:25:00")
    s.tx_state("S", "c", "Success", "10:26:00")
    s.payment("R", "10:40:00", amount=100)
    s.cancel("P", ORPHAN, None, "10:30:00")
    # S's money landed with no order: refund_orphaned_charge gives it back at that same check.
    s.refund("S", REFUND_ORPHAN, None, "10:30:01", 5000, "grace_period_expired")
    s.write()


def s37():
    # A Recurring Order's schedule creates the order with OrderCreatedFromRecurringOrder, which
    # replaces OrderCreated: the subscription's payment, authorized before, covers it.
    s = Stream("37-recurring-order-released")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 4990, "Success")])
    m = s.order("O", "10:00:30", 4990, ["P"], typ="OrderCreatedFromRecurringOrder")
    s.lines[-1]["recurringOrderRef"] = {"typeId": "recurring-order", "id": uid(f"{s.name}/R")}
    s.release("O", "P", m, "10:00:30")
    s.write()


def s38():
    # A capture consumes its authorization: money captured and then refunded (or charged back)
    # covers nothing, whatever the authorization said. O1 and O2 are never released; O3's
    # authorization of 10000 was partly captured (4000) and that part refunded: the open 6000
    # covers it; O4's authorization fully captured covers it once.
    s = Stream("38-captured-then-refunded-covers-nothing")
    s.payment("P1", "10:00:00", amount=4000)
    s.tx_added("P1", "a", "Authorization", 4000, "Success", "10:00:01")
    s.tx_added("P1", "c", "Charge", 4000, "Success", "10:00:02")
    s.tx_added("P1", "r", "Refund", 4000, "Success", "10:00:03")
    s.order("O1", "10:00:04", 4000, ["P1"])
    s.payment("P2", "10:01:00", amount=5000)
    s.tx_added("P2", "a", "Authorization", 5000, "Success", "10:01:01")
    s.tx_added("P2", "c", "Charge", 5000, "Success", "10:01:02")
    s.tx_added("P2", "b", "Chargeback", 5000, "Success", "10:01:03")
    s.order("O2", "10:01:04", 5000, ["P2"])
    s.payment("P3", "10:02:00", amount=10000)
    s.tx_added("P3", "a", "Authorization", 10000, "Success", "10:02:01")
    s.tx_added("P3", "c", "Charge", 4000, "Success", "10:02:02")
    s.tx_added("P3", "r", "Refund", 4000, "Success", "10:02:03")
    m = s.order("O3", "10:02:04", 6000, ["P3"])
    s.release("O3", "P3", m, "10:02:04")
    s.payment("P4", "10:03:00", amount=5000)
    s.tx_added("P4", "a", "Authorization", 5000, "Success", "10:03:01")
    s.tx_added("P4", "c", "Charge", 5000, "Pending", "10:03:02")
    s.order("O4", "10:03:03", 5000, ["P4"])
    m = s.tx_state("P4", "c", "Success", "10:03:10")
    s.release("O4", "P4", m, "10:03:10")
    s.write()


def s39():
    # Free orders (a 100 % voucher): a gross total of 0 owes nothing and is released as soon as
    # the order can be fulfilled — without a payment (payment_id null), or with a zero-amount
    # authorization. A free order that cannot be fulfilled is not.
    s = Stream("39-free-orders-are-released")
    m = s.order("O1", "10:00:00", 0, [])
    s.expected.append({"action": "release_order", "rule": "release_for_fulfillment",
                       "key": f"release:{uid(s.name + '/O1')}", "payment_id": None,
                       "order_id": uid(s.name + "/O1"), "message_id": m, "at": ts("10:00:00")})
    s.payment("P2", "10:01:00", amount=0)
    s.tx_added("P2", "a", "Authorization", 0, "Success", "10:01:01")
    m = s.order("O2", "10:01:02", 0, ["P2"])
    s.release("O2", "P2", m, "10:01:02")
    s.order("O3", "10:02:00", 0, [], state="Complete", shipment="Delivered", typ="OrderImported")
    s.write()


def s40():
    # refund_orphaned_charge: charged money with no order goes back at the grace check. An
    # auto-captured payment (A: Authorization then Charge, both 5000) refunds 5000 and is never
    # cancelled (a Charge took the authorization); a direct sale (D: a Charge of 3000, no
    # Authorization) refunds 3000; a partial capture (X: Authorization 8000, Charge 3000) refunds
    # the 3000 charged and cancels nothing (Checkout cannot cancel a captured payment: the open
    # 5000 is left to expire); K, charged 2000 and charged back 500, refunds 1500. E is a direct
    # sale with an order: released, never refunded.
    s = Stream("40-orphaned-charges-are-refunded")
    s.payment("A", "10:00:00", txs=[("a", "Authorization", 5000, "Success")])
    s.tx_added("A", "c", "Charge", 5000, "Success", "10:00:01")
    s.payment("D", "10:00:02", amount=3000)
    s.tx_added("D", "c", "Charge", 3000, "Success", "10:00:03")
    s.payment("X", "10:00:04", amount=8000, txs=[("a", "Authorization", 8000, "Success")])
    s.tx_added("X", "c", "Charge", 3000, "Success", "10:00:05")
    s.payment("K", "10:00:06", amount=2000)
    s.tx_added("K", "c", "Charge", 2000, "Success", "10:00:07")
    s.tx_added("K", "b", "Chargeback", 500, "Success", "10:00:08")
    s.payment("E", "10:00:09", amount=4000)
    s.tx_added("E", "c", "Charge", 4000, "Success", "10:00:10")
    m = s.order("O", "10:00:11", 4000, ["E"])
    s.release("O", "E", m, "10:00:11")
    s.payment("Q", "10:20:00", amount=100)  # the clock passes every grace check
    # Each check is due a grace period (10 m) after the payment first showed money.
    s.refund("A", REFUND_ORPHAN, None, "10:10:00", 5000, "grace_period_expired")
    s.refund("D", REFUND_ORPHAN, None, "10:10:03", 3000, "grace_period_expired")
    s.refund("X", REFUND_ORPHAN, None, "10:10:04", 3000, "grace_period_expired")
    s.refund("K", REFUND_ORPHAN, None, "10:10:07", 1500, "grace_period_expired")
    s.write()


def s41():
    # Checkout could not create the order: charged money is refunded at once — at the event when
    # the Charge has succeeded (P), else when it does (S: its Charge was Pending at the event).
    s = Stream("41-order-creation-failed-refunds-the-charge")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Success"), ("c", "Charge", 5000, "Success")])
    s.payment("S", "10:00:01", amount=3000, txs=[("c", "Charge", 3000, "Pending")])
    m = s.event("CheckoutOrderCreationFailed", "10:00:04",
                {"cart": {"typeId": "cart", "id": uid(s.name + "/cart")},
                 "payments": [{"typeId": "payment", "id": uid(s.name + "/P")},
                              {"typeId": "payment", "id": uid(s.name + "/S")}],
                 "errors": [{"code": "OutOfStock", "message": "The item is out of stock."}]}, "failed")
    s.refund("P", REFUND_ORPHAN, m, "10:00:04", 5000, "order_creation_failed")
    m = s.tx_state("S", "c", "Success", "10:00:30")
    s.refund("S", REFUND_ORPHAN, m, "10:00:30", 3000, "order_creation_failed")
    s.payment("Q", "10:20:00", amount=100)  # the grace checks find both refunded
    s.write()


def cancelled_orders(s):
    """Two orders paid and released, then cancelled: O1 with a card authorization captured in full
    (P1), O2 with a direct sale (P2). Returns the two OrderStateChanged(Cancelled) message ids."""
    s.payment("P1", "10:00:00", txs=[("a", "Authorization", 5000, "Success")])
    m = s.order("O1", "10:00:01", 5000, ["P1"])
    s.release("O1", "P1", m, "10:00:01")
    s.tx_added("P1", "c", "Charge", 5000, "Success", "10:01:00")
    s.payment("P2", "10:02:00", amount=3000, txs=[("c", "Charge", 3000, "Success")])
    m = s.order("O2", "10:02:01", 3000, ["P2"])
    s.release("O2", "P2", m, "10:02:01")
    c1 = s.order_state("O1", "Cancelled", "10:05:00")
    c2 = s.order_state("O2", "Cancelled", "10:06:00")
    s.payment("Q", "10:30:00", amount=100)  # the grace checks change nothing
    return c1, c2


def s42():
    # refund_on_order_cancelled (opt-in, on here): a cancelled order's charged money goes back
    # at the cancellation; the captured authorization is not cancelled (nothing open is left).
    s = Stream("42-order-cancelled-refunds-its-charge")
    c1, c2 = cancelled_orders(s)
    s.refund("P1", REFUND_ON_CANCELLED, c1, "10:05:00", 5000, "order_cancelled", order="O1")
    s.refund("P2", REFUND_ON_CANCELLED, c2, "10:06:00", 3000, "order_cancelled", order="O2")
    s.write(toml="[rules.refund_on_order_cancelled]\nenabled = true\n")


def s43():
    # The same with refund_on_order_cancelled off (the default): nothing is refunded (the merchant
    # may keep a fee); the charged money on cancelled orders is logged at warn and counted.
    s = Stream("43-order-cancelled-keeps-its-charge-by-default")
    cancelled_orders(s)
    s.write()


def s44():
    # A refund of ours that fails at the provider is not tried again (refund:{P} runs once; it is
    # reported instead). Someone else's refund in flight is waited for: R's check at 10:10 finds
    # a Refund of 2000 Pending and looks again at 10:20, when it has landed: 3000 is refunded.
    s = Stream("44-a-failed-refund-is-not-retried")
    s.payment("P", "10:00:00", txs=[("a", "Authorization", 5000, "Success"), ("c", "Charge", 5000, "Success")])
    s.payment("R", "10:00:01", txs=[("c", "Charge", 5000, "Success")])
    s.tx_added("R", "r", "Refund", 2000, "Pending", "10:00:02")
    s.payment("Q", "10:10:05", amount=100)  # P's check at 10:10 refunds it
    s.refund("P", REFUND_ORPHAN, None, "10:10:00", 5000, "grace_period_expired")
    s.tx_added("P", "r", "Refund", 5000, "Pending", "10:10:06")
    s.tx_state("P", "r", "Failure", "10:11:00")
    s.tx_state("R", "r", "Success", "10:15:00")
    s.payment("Q2", "10:40:00", amount=100)
    s.refund("R", REFUND_ORPHAN, None, "10:20:01", 3000, "grace_period_expired")
    s.write()


RETURNS = "[rules.refund_on_return]\nenabled = true\n"


def shipped_order(s, lines, total, payments):
    """O, paid by `payments` (each (name, charged cents, created at)) captured in full, released
    and shipped. Returns nothing: the release is expected here."""
    for (p, cents, at) in payments:
        s.payment(p, at, amount=cents, txs=[("a", "Authorization", cents, "Success"),
                                            ("c", "Charge", cents, "Success")])
    m = s.order("O", "10:00:10", total, [p for (p, _, _) in payments], lines=lines)
    s.release("O", payments[-1][0], m, "10:00:10")
    s.shipment("O", "Shipped", "10:01:00")


def s45():
    # refund_on_return: a line of 3 for 1000 (P charged 1500 with a line of 1 for 500). One unit
    # comes back: 333 (⌊1000 × 1 / 3⌋). A second: 666 in all, so 333 more. The third: exactly
    # 1000 in all, so 334. An item only announced (Advised, NonRefundable) refunds nothing; the
    # line of 1 is never returned. Shipping is not refunded (there is none here).
    s = Stream("45-return-refunds-per-line-rounding-down")
    shipped_order(s, [("L", 3, 1000), ("M", 1, 500)], 1500, [("P", 1500, "10:00:00")])
    m = s.return_added("O", [s.return_item("O", "r1", "L", 1)], "11:00:00", "r1")
    s.line_refund("P", "O", "L", 1, m, "11:00:00", 333)
    s.return_added("O", [s.return_item("O", "r2", "L", 1, shipment="Advised", payment="NonRefundable")],
                   "11:30:00", "r2")
    m = s.return_state("O", "r2", "Returned", "12:00:00")
    s.line_refund("P", "O", "L", 2, m, "12:00:00", 333)
    m = s.return_added("O", [s.return_item("O", "r3", "L", 1)], "13:00:00", "r3")
    s.line_refund("P", "O", "L", 3, m, "13:00:00", 334)
    s.write(toml=RETURNS)


def s46():
    # A return split across two payments: O (a line of 2 for 3000) is paid by a gift card G
    # (1000, created first) and a card C (2000). Both units come back at once: 3000 is due,
    # 1000 from G (all it has) and 2000 from C. Then setReturnInfo rewrites the return info with
    # new item ids for the same units: nothing more is due (no second refund).
    s = Stream("46-return-split-across-two-payments")
    shipped_order(s, [("L", 2, 3000)], 3000, [("G", 1000, "10:00:00"), ("C", 2000, "10:00:05")])
    m = s.return_added("O", [s.return_item("O", "r1", "L", 2)], "11:00:00", "r1")
    s.line_refund("G", "O", "L", 2, m, "11:00:00", 1000)
    s.line_refund("C", "O", "L", 2, m, "11:00:00", 2000)
    s.return_set("O", [[s.return_item("O", "r1", "L", 2, rev="-rewritten")]], "12:00:00", "rewritten")
    s.write(toml=RETURNS)


def s47():
    # Items someone decided: one refunded by hand (paymentState Refunded) and one not to refund
    # (NotRefunded) are left out; a third unit Returned is refunded: 250 of a line of 4 for 1000.
    # With on = "BackInStock", the Returned item waits until it is back in stock.
    s = Stream("47-return-leaves-out-decided-items-and-waits-for-stock")
    shipped_order(s, [("L", 4, 1000)], 1000, [("P", 1000, "10:00:00")])
    s.return_added("O", [s.return_item("O", "r1", "L", 1, payment="Refunded"),
                         s.return_item("O", "r2", "L", 1, payment="NotRefunded"),
                         s.return_item("O", "r3", "L", 1)], "11:00:00", "r")
    m = s.return_state("O", "r3", "BackInStock", "12:00:00")
    s.line_refund("P", "O", "L", 1, m, "12:00:00", 250)
    s.write(toml='[rules.refund_on_return]\nenabled = true\non = "BackInStock"\n')


def s48():
    # refund_on_return is off by default: returned goods refund nothing.
    s = Stream("48-return-refunds-nothing-by-default")
    shipped_order(s, [("L", 1, 1000)], 1000, [("P", 1000, "10:00:00")])
    s.return_added("O", [s.return_item("O", "r1", "L", 1)], "11:00:00", "r1")
    s.write()


def s49():
    # Not refundable in full: P was charged 600 of a line of 1 for 1000 (a partial capture;
    # 400 of the authorization still open). The return refunds the 600 charged and reports the
    # 400 short (payrules_returns_not_refundable_total); nothing is refunded twice later.
    s = Stream("49-return-not-fully-refundable")
    s.payment("P", "10:00:00", amount=1000, txs=[("a", "Authorization", 1000, "Success"),
                                                 ("c", "Charge", 600, "Success")])
    m = s.order("O", "10:00:10", 1000, ["P"], lines=[("L", 1, 1000)])
    s.release("O", "P", m, "10:00:10")
    s.shipment("O", "Shipped", "10:01:00")
    m = s.return_added("O", [s.return_item("O", "r1", "L", 1)], "11:00:00", "r1")
    s.line_refund("P", "O", "L", 1, m, "11:00:00", 600)
    s.return_state("O", "r1", "BackInStock", "12:00:00")
    s.write(toml=RETURNS)


for f in (s22, s23, s24, s25, s26, s27, s28, s29, s30, s31, s32, s33, s34, s35, s36, s37, s38, s39,
          s40, s41, s42, s43, s44, s45, s46, s47, s48, s49):
    f()
