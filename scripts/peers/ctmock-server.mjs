// Loopback-only @labdigital/commercetools-mock HTTP server for payrules integration tests.
//
//   node scripts/peers/ctmock-server.mjs [PORT]        (or env CTMOCK_PORT; default 8989)
//
// The package has no CLI and its runServer() binds 0.0.0.0, so we build the mock ourselves and call
// ct.app.listen({port, host: "127.0.0.1"}). OAuth is on: API calls need a Bearer token issued by
// POST /oauth/token?grant_type=client_credentials&scope=... (HTTP Basic, any id/secret).
// Env CTMOCK_STRICT=1 turns on zod validation of drafts. No per-request logging (silent: true).
//
// The package is loaded from PAYRULES_PEER_NODE_DIR (default: <repo>/.peers/node), where
// scripts/peers/install.sh installs it. Prints one line "commercetools-mock ready on http://127.0.0.1:PORT".
//
// Always added (the mock only implements `setKey`): the Subscription update actions
// `changeDestination`, `setMessages`, `setEvents` and `setChanges`; and an order created from a
// cart marks the cart `Ordered`, as commercetools does.
//
// Returns (always): the mock has only the order update action `addReturnInfo`, and gives every
// item paymentState `Initial`; commercetools gives `NonRefundable` to items that are `Advised`
// and `Initial` to items `Returned` (ReturnShipmentState/ReturnPaymentState in the API reference).
// Added: that rule for `addReturnInfo`, and `setReturnInfo` {items?: ReturnInfoDraft[]} (replaces
// every return; new item ids; empty or absent removes them), `setReturnShipmentState` and
// `setReturnPaymentState` {returnItemId | returnItemKey, shipmentState | paymentState}
// (400 InvalidOperation for an unknown item; `setReturnShipmentState` only moves an item from
// `Returned` to `BackInStock` or `Unusable`, as the reference says — the error code is the mock's).
//
// Env CTMOCK_MESSAGES=1 adds what the mock lacks for Subscriptions (off by default):
//   - Messages: every write of a payment or order (whatever the route: create, update, import,
//     order from cart) is diffed against the stored resource before it, and Messages are generated
//     in commercetools' shape (id, version 1, sequenceNumber per resource, resource, resourceVersion,
//     resourceUserProvidedIdentifiers when the resource has a key/orderNumber, type, the type's
//     fields, createdAt, lastModifiedAt, createdBy, lastModifiedBy):
//       payment: PaymentCreated {payment}, PaymentTransactionAdded {transaction},
//                PaymentTransactionStateChanged {transactionId, state},
//                PaymentStatusStateTransition {state, force}
//       order:   OrderCreated {order} (from a cart) / OrderImported {order} (no cart),
//                OrderStateChanged {orderState, oldOrderState}, OrderPaymentStateChanged,
//                OrderShipmentStateChanged, OrderPaymentAdded {paymentRef}, OrderStateTransition,
//                then, in the order of the update's actions: ReturnInfoAdded {returnInfo}
//                (addReturnInfo), ReturnInfoSet {returnInfo, absent when none is left}
//                (setReturnInfo), OrderReturnShipmentStateChanged {returnItemId,
//                returnShipmentState} (setReturnShipmentState); setReturnPaymentState produces no
//                Message (the API reference lists none)
//     One update with several actions gives its messages in the order above, all with the
//     resource's new version. Not generated: OrderEditApplied, OrderDeleted, Checkout Events.
//   - Delivery: each Message goes to every stored Subscription of the project whose `messages`
//     include its resourceTypeId (and type, or no `types`), as the Platform MessageDeliveryPayload
//     (`notificationType: "Message"`, `projectKey` + the Message) or, for `format.type`
//     "CloudEvents", wrapped in a CloudEvents 1.0 envelope. `changes` subscriptions get
//     ResourceCreated / ResourceUpdated. Delivery happens before the API call answers.
//       GoogleCloudPubSub: published through the emulator's REST API at PUBSUB_EMULATOR_HOST
//         (host:port), data = the JSON (no attributes; CloudEvents adds `contentType`).
//       SQS: an unsigned JSON-protocol SendMessage (MessageBody = the JSON) to the queueUrl's host,
//         or to CTMOCK_SQS_ENDPOINT when set — works with fauxqs, not with moto (needs SigV4).
//       Other destination types: not delivered.
//     A failed delivery of a Message is logged to stderr and dropped.
//   - The test notification: creating a Subscription (and changeDestination) first delivers
//     {"notificationType":"ResourceCreated","projectKey":…,"resource":{"typeId":"subscription","id":…},
//     "resourceUserProvidedIdentifiers":{"key":…},"version":1,"modifiedAt":…} to the destination;
//     if that fails the call answers 400 InvalidInput and nothing is stored, as commercetools does.
//   - The Messages Query API: GET /{projectKey}/messages (where, var.*, sort, limit, offset,
//     withTotal) and GET /{projectKey}/messages/{id}, over the generated Messages (no
//     messagesConfiguration check; Messages are never deleted).
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.PAYRULES_PEER_NODE_DIR || resolve(here, "../../.peers/node");

async function importInstalled(name) {
  const pkgDir = join(nodeDir, "node_modules", name);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  } catch (e) {
    console.error(`ctmock-server: cannot find ${name} under ${nodeDir} (${e.message}); run scripts/peers/install.sh`);
    process.exit(2);
  }
  let entry = pkg.exports?.["."] ?? pkg.module ?? pkg.main;
  while (entry && typeof entry === "object") entry = entry.import ?? entry.default;
  return import(pathToFileURL(join(pkgDir, entry)).href);
}

const port = Number.parseInt(process.argv[2] ?? process.env.CTMOCK_PORT ?? "8989", 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ctmock-server: invalid port ${process.argv[2] ?? process.env.CTMOCK_PORT}`);
  process.exit(2);
}

const messagesOn = process.env.CTMOCK_MESSAGES === "1";

const { CommercetoolsMock, InMemoryStorage } = await importInstalled("@labdigital/commercetools-mock");

// ------------------------------------------------------------------------------------------------
// Messages and delivery (CTMOCK_MESSAGES=1)

/** Set once the mock exists: the mock's own error class, so its error handler answers in the API's shape. */
let CommercetoolsError = null;

function apiError(code, message, status = 400) {
  if (CommercetoolsError) return new CommercetoolsError({ code, message }, status);
  const e = new Error(message);
  e.statusCode = status;
  return e;
}

/** The user-provided identifiers commercetools adds to a payload, or undefined. */
function identifiers(typeId, resource) {
  const ids = {};
  if (resource.key) ids.key = resource.key;
  if (typeId === "order" && resource.orderNumber) ids.orderNumber = resource.orderNumber;
  return Object.keys(ids).length > 0 ? ids : undefined;
}

/** The Messages one write produced: [type, fields] pairs, diffing `before` (null on create) and `after`. */
function diff(typeId, before, after) {
  const out = [];
  if (typeId === "payment") {
    if (!before) return [["PaymentCreated", { payment: after }]];
    const old = new Map((before.transactions ?? []).map((t) => [t.id, t]));
    for (const t of after.transactions ?? []) {
      if (!old.has(t.id)) out.push(["PaymentTransactionAdded", { transaction: t }]);
    }
    for (const t of after.transactions ?? []) {
      const was = old.get(t.id);
      if (was && was.state !== t.state) {
        out.push(["PaymentTransactionStateChanged", { transactionId: t.id, state: t.state }]);
      }
    }
    const [s0, s1] = [before.paymentStatus?.state, after.paymentStatus?.state];
    if (s1 && s1.id !== s0?.id) {
      out.push(["PaymentStatusStateTransition", { state: { typeId: "state", id: s1.id }, force: false }]);
    }
    return out;
  }
  if (typeId === "order") {
    if (!before) return [[after.cart ? "OrderCreated" : "OrderImported", { order: after }]];
    const changed = (field, type, name, oldName) => {
      if (after[field] !== undefined && after[field] !== before[field]) {
        const fields = { [name]: after[field] };
        if (before[field] !== undefined) fields[oldName] = before[field];
        out.push([type, fields]);
      }
    };
    changed("orderState", "OrderStateChanged", "orderState", "oldOrderState");
    changed("paymentState", "OrderPaymentStateChanged", "paymentState", "oldPaymentState");
    changed("shipmentState", "OrderShipmentStateChanged", "shipmentState", "oldShipmentState");
    const had = new Set((before.paymentInfo?.payments ?? []).map((p) => p.id));
    for (const p of after.paymentInfo?.payments ?? []) {
      if (!had.has(p.id)) out.push(["OrderPaymentAdded", { paymentRef: { typeId: "payment", id: p.id } }]);
    }
    const [s0, s1] = [before.state, after.state];
    if (s1 && s1.id !== s0?.id) {
      const fields = { state: { typeId: "state", id: s1.id }, force: false };
      if (s0) fields.oldState = { typeId: "state", id: s0.id };
      out.push(["OrderStateTransition", fields]);
    }
    out.push(...takeReturnMessages(after.id));
    return out;
  }
  return out;
}

/**
 * The return Messages of the order update being applied, by order id: the return actions say
 * which of them they are (a diff cannot tell `setReturnInfo` on an order without returns from
 * `addReturnInfo`). Reset when an update starts, dropped when it fails, taken by `diff`.
 */
const returnMessages = new Map();

function takeReturnMessages(orderId) {
  const pending = returnMessages.get(orderId) ?? [];
  returnMessages.delete(orderId);
  return pending;
}

/** Last sequenceNumber per `${projectKey}/${typeId}/${id}`. */
const sequences = new Map();

function nextSequence(projectKey, typeId, id) {
  const k = `${projectKey}/${typeId}/${id}`;
  const n = (sequences.get(k) ?? 0) + 1;
  sequences.set(k, n);
  return n;
}

function buildMessage(projectKey, typeId, resource, type, fields) {
  const now = new Date().toISOString();
  const message = {
    id: randomUUID(),
    version: 1,
    sequenceNumber: nextSequence(projectKey, typeId, resource.id),
    resource: { typeId, id: resource.id },
    resourceVersion: resource.version,
  };
  const ids = identifiers(typeId, resource);
  if (ids) message.resourceUserProvidedIdentifiers = ids;
  Object.assign(message, { type, ...fields, createdAt: now, lastModifiedAt: now });
  if (resource.lastModifiedBy) {
    message.createdBy = resource.lastModifiedBy;
    message.lastModifiedBy = resource.lastModifiedBy;
  }
  return message;
}

/** The plural path segment of a resource type, for CloudEvents `source`. */
const plural = (typeId) => (typeId.endsWith("y") ? `${typeId.slice(0, -1)}ies` : `${typeId}s`);

/** What goes on the wire for `subscription`: the Platform payload, or it wrapped in CloudEvents. */
function wire(subscription, projectKey, payload, { typeId, kind, type, id, subject, time, sequence }) {
  if (subscription.format?.type !== "CloudEvents") return { body: payload, cloudEvents: false };
  const envelope = {
    specversion: subscription.format.cloudEventsVersion ?? "1.0",
    id: id ?? randomUUID(),
    type: `com.commercetools.${typeId}.${kind}.${type}`,
    source: `/${projectKey}/${plural(typeId)}`,
    subject,
    time,
  };
  if (sequence !== undefined) {
    envelope.sequence = String(sequence);
    envelope.sequencetype = "Integer";
  }
  if (kind === "message") envelope.dataref = `/${projectKey}/messages/${id}`;
  envelope.data = payload;
  return { body: envelope, cloudEvents: true };
}

async function post(url, headers, body, what) {
  let resp;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    throw new Error(`${what}: ${e.cause?.message ?? e.message}`);
  }
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${what}: HTTP ${resp.status} ${text.slice(0, 300)}`);
  return text;
}

/** Delivers one notification (`body` is the JSON object) to a Subscription destination; throws on failure. */
async function deliver(destination, body, cloudEvents) {
  const json = JSON.stringify(body);
  switch (destination?.type) {
    case "GoogleCloudPubSub": {
      const host = process.env.PUBSUB_EMULATOR_HOST;
      if (!host) throw new Error("PUBSUB_EMULATOR_HOST is not set: the mock cannot reach Pub/Sub");
      const topic = `projects/${destination.projectId}/topics/${destination.topic}`;
      const message = { data: Buffer.from(json, "utf8").toString("base64") };
      if (cloudEvents) message.attributes = { contentType: "application/cloudevents+json; charset=UTF-8" };
      await post(
        `http://${host}/v1/${topic}:publish`,
        { "Content-Type": "application/json" },
        { messages: [message] },
        `Pub/Sub ${topic} on ${host}`,
      );
      return;
    }
    case "SQS": {
      let endpoint = process.env.CTMOCK_SQS_ENDPOINT;
      if (!endpoint) {
        try {
          endpoint = new URL(destination.queueUrl).origin;
        } catch {
          throw new Error(`SQS queueUrl ${JSON.stringify(destination.queueUrl)} is not a URL`);
        }
      }
      await post(
        `${endpoint.replace(/\/+$/, "")}/`,
        { "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessage" },
        { QueueUrl: destination.queueUrl, MessageBody: json },
        `SQS ${destination.queueUrl} via ${endpoint}`,
      );
      return;
    }
    default:
      throw new Error(`the mock does not deliver to ${destination?.type ?? "a destination without a type"}`);
  }
}

function describe(destination) {
  switch (destination?.type) {
    case "GoogleCloudPubSub":
      return `GoogleCloudPubSub projects/${destination.projectId}/topics/${destination.topic}`;
    case "SQS":
      return `SQS ${destination.queueUrl} in ${destination.region}`;
    default:
      return `${destination?.type}`;
  }
}

/** The ResourceCreated test notification for `subscription`; throws the API's 400 if undeliverable. */
async function sendTestNotification(projectKey, subscription) {
  const now = new Date().toISOString();
  const payload = {
    notificationType: "ResourceCreated",
    projectKey,
    resource: { typeId: "subscription", id: subscription.id },
  };
  if (subscription.key) payload.resourceUserProvidedIdentifiers = { key: subscription.key };
  Object.assign(payload, { version: 1, modifiedAt: now });
  const { body, cloudEvents } = wire(subscription, projectKey, payload, {
    typeId: "subscription",
    kind: "change",
    type: "ResourceCreated",
    subject: subscription.id,
    time: now,
  });
  try {
    await deliver(subscription.destination, body, cloudEvents);
  } catch (e) {
    throw apiError(
      "InvalidInput",
      `A test message could not be delivered to this destination: ${describe(subscription.destination)}. ` +
        `Please make sure your destination is correctly configured. (${e.message})`,
    );
  }
}

const wantsMessage = (subscription, typeId, type) =>
  (subscription.messages ?? []).some(
    (m) => m.resourceTypeId === typeId && (!m.types || m.types.length === 0 || m.types.includes(type)),
  );

const wantsChanges = (subscription, typeId) =>
  (subscription.changes ?? []).some((c) => c.resourceTypeId === typeId);

/** Storage that generates and delivers Messages on every payment/order write. */
class MessagingStorage extends InMemoryStorage {
  /** Adds a store for Messages next to the mock's own. */
  async forProjectKey(projectKey) {
    const stores = await super.forProjectKey(projectKey);
    if (!stores.message) stores.message = new stores.payment.constructor();
    return stores;
  }

  async add(projectKey, typeId, obj, params = {}) {
    if (typeId === "subscription") {
      const before = await super.get(projectKey, typeId, obj.id);
      if (!before) await sendTestNotification(projectKey, obj);
      return super.add(projectKey, typeId, obj, params);
    }
    if (typeId !== "payment" && typeId !== "order") return super.add(projectKey, typeId, obj, params);
    const before = await super.get(projectKey, typeId, obj.id);
    const result = await super.add(projectKey, typeId, obj, params);
    const after = await super.get(projectKey, typeId, obj.id);
    const messages = diff(typeId, before, after).map(([type, fields]) =>
      buildMessage(projectKey, typeId, after, type, fields),
    );
    for (const m of messages) await super.add(projectKey, "message", m);
    await this.notify(projectKey, typeId, before, after, messages);
    return result;
  }

  async notify(projectKey, typeId, before, after, messages) {
    const subscriptions = await super.all(projectKey, "subscription");
    for (const s of subscriptions) {
      const outgoing = [];
      for (const m of messages) {
        if (!wantsMessage(s, typeId, m.type)) continue;
        outgoing.push(
          wire(s, projectKey, { notificationType: "Message", projectKey, ...m }, {
            typeId,
            kind: "message",
            type: m.type,
            id: m.id,
            subject: after.id,
            time: after.lastModifiedAt,
            sequence: m.sequenceNumber,
          }),
        );
      }
      if (wantsChanges(s, typeId)) {
        const type = before ? "ResourceUpdated" : "ResourceCreated";
        const payload = { notificationType: type, projectKey, resource: { typeId, id: after.id } };
        const ids = identifiers(typeId, after);
        if (ids) payload.resourceUserProvidedIdentifiers = ids;
        payload.version = after.version;
        if (before) payload.oldVersion = before.version;
        payload.modifiedAt = after.lastModifiedAt;
        outgoing.push(
          wire(s, projectKey, payload, {
            typeId,
            kind: "change",
            type,
            subject: after.id,
            time: after.lastModifiedAt,
          }),
        );
      }
      for (const { body, cloudEvents } of outgoing) {
        try {
          await deliver(s.destination, body, cloudEvents);
        } catch (e) {
          console.error(`ctmock-server: delivery to Subscription ${s.key ?? s.id} failed: ${e.message}`);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// The mock

const ct = new CommercetoolsMock({
  enableAuthentication: true,
  validateCredentials: true,
  silent: true,
  strict: process.env.CTMOCK_STRICT === "1",
  ...(messagesOn ? { storage: new MessagingStorage() } : {}),
});

// The mock's error class, caught from an update action it does not know.
const subscriptionActions = ct._repositories.subscription.actions;
try {
  await subscriptionActions.apply({ projectKey: "probe" }, { id: "probe", version: 1 }, 1, [
    { action: "payrulesProbe" },
  ]);
} catch (e) {
  CommercetoolsError = e.constructor;
}

// Subscription update actions the mock lacks.
Object.assign(subscriptionActions, {
  async changeDestination(context, resource, { destination }) {
    if (messagesOn) await sendTestNotification(context.projectKey, { ...resource, destination });
    resource.destination = destination;
    resource.status = "Healthy";
  },
  setMessages(_context, resource, { messages }) {
    resource.messages = messages ?? [];
  },
  setEvents(_context, resource, { events }) {
    resource.events = events ?? [];
  },
  setChanges(_context, resource, { changes }) {
    resource.changes = changes ?? [];
  },
});

// commercetools sets a cart's `cartState` to `Ordered` once an order is created from it; the mock
// leaves it `Active`. payrules reads it to confirm a CheckoutOrderCreationFailed event.
const orderRepository = ct._repositories.order;
const createFromCart = orderRepository.createFromCart.bind(orderRepository);
orderRepository.createFromCart = async (context, cartReference, ...rest) => {
  const order = await createFromCart(context, cartReference, ...rest);
  const cart = await ct._storage.getByResourceIdentifier(context.projectKey, cartReference);
  if (cart && cart.cartState !== "Ordered") {
    const now = new Date().toISOString();
    await ct._storage.add(context.projectKey, "cart", {
      ...cart,
      cartState: "Ordered",
      version: cart.version + 1,
      lastModifiedAt: now,
    });
  }
  return order;
};

// Order returns (see the header): the payment state commercetools derives, and the actions the
// mock lacks.
const orderActions = ct._repositories.order.actions;
const addReturnInfo = orderActions.addReturnInfo.bind(orderActions);
const orderApply = orderActions.apply.bind(orderActions);

/** The ReturnPaymentState commercetools gives a new item in `shipmentState`. */
const initialPaymentState = (shipmentState) => (shipmentState === "Advised" ? "NonRefundable" : "Initial");

/** Adds one ReturnInfo from its draft (the mock builds the items), with commercetools' payment states. */
async function addOneReturnInfo(context, resource, draft) {
  await addReturnInfo(context, resource, { items: [], ...draft });
  const info = resource.returnInfo[resource.returnInfo.length - 1];
  for (const item of info.items) item.paymentState = initialPaymentState(item.shipmentState);
  return info;
}

/** The return item an action names by `returnItemId` or `returnItemKey`; 400 if there is none. */
function returnItem(resource, { returnItemId, returnItemKey }) {
  for (const info of resource.returnInfo ?? []) {
    for (const item of info.items ?? []) {
      if ((returnItemId && item.id === returnItemId) || (returnItemKey && item.key === returnItemKey)) return item;
    }
  }
  throw apiError(
    "InvalidOperation",
    `The order has no return item with ${returnItemId ? `id '${returnItemId}'` : `key '${returnItemKey}'`}.`,
  );
}

const pushReturnMessage = (resource, type, fields) => {
  if (!returnMessages.has(resource.id)) returnMessages.set(resource.id, []);
  returnMessages.get(resource.id).push([type, fields]);
};

Object.assign(orderActions, {
  async apply(context, resource, version, actions) {
    returnMessages.delete(resource.id);
    try {
      return await orderApply(context, resource, version, actions);
    } catch (e) {
      returnMessages.delete(resource.id);
      throw e;
    }
  },
  async addReturnInfo(context, resource, draft) {
    const info = await addOneReturnInfo(context, resource, draft);
    pushReturnMessage(resource, "ReturnInfoAdded", { returnInfo: structuredClone(info) });
  },
  async setReturnInfo(context, resource, { items }) {
    resource.returnInfo = [];
    for (const draft of items ?? []) await addOneReturnInfo(context, resource, draft);
    const fields = resource.returnInfo.length > 0 ? { returnInfo: structuredClone(resource.returnInfo) } : {};
    pushReturnMessage(resource, "ReturnInfoSet", fields);
  },
  setReturnShipmentState(_context, resource, action) {
    const item = returnItem(resource, action);
    if (item.shipmentState !== "Returned" || !["BackInStock", "Unusable"].includes(action.shipmentState)) {
      throw apiError(
        "InvalidOperation",
        `A return item can only go from Returned to BackInStock or Unusable, not from ${item.shipmentState} to ${action.shipmentState}.`,
      );
    }
    item.shipmentState = action.shipmentState;
    item.lastModifiedAt = new Date().toISOString();
    pushReturnMessage(resource, "OrderReturnShipmentStateChanged", {
      returnItemId: item.id,
      returnShipmentState: item.shipmentState,
    });
  },
  setReturnPaymentState(_context, resource, action) {
    const item = returnItem(resource, action);
    item.paymentState = action.paymentState;
    item.lastModifiedAt = new Date().toISOString();
  },
});

if (messagesOn) {
  const storage = ct._storage;
  const list = (v) => (v === undefined ? undefined : Array.isArray(v) ? v : [v]);
  ct.app.register(
    async (instance) => {
      instance.addHook("preHandler", ct._oauth2.createMiddleware());
      instance.get("/messages", async (request, reply) => {
        const q = request.query ?? {};
        const params = {
          where: list(q.where),
          sort: list(q.sort),
          limit: q.limit !== undefined ? Number(q.limit) : undefined,
          offset: q.offset !== undefined ? Number(q.offset) : undefined,
        };
        for (const [k, v] of Object.entries(q)) if (k.startsWith("var.")) params[k] = v;
        if (params.limit !== undefined && !(params.limit >= 1 && params.limit <= 500)) {
          throw apiError("InvalidInput", `limit must be between 1 and 500, got ${q.limit}`);
        }
        const page = await storage.query(request.params.projectKey, "message", params);
        if (String(q.withTotal) === "false") delete page.total;
        return reply.status(200).send(page);
      });
      instance.get("/messages/:id", async (request, reply) => {
        const m = await storage.get(request.params.projectKey, "message", request.params.id);
        if (!m) {
          throw apiError("ResourceNotFound", `The Resource with ID '${request.params.id}' was not found.`, 404);
        }
        return reply.status(200).send(m);
      });
    },
    { prefix: "/:projectKey" },
  );
}

let closing = false;
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, () => {
    if (closing) process.exit(0);
    closing = true;
    ct.app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
try {
  const address = await ct.app.listen({ port, host: "127.0.0.1" });
  console.log(`commercetools-mock ready on ${address}${messagesOn ? " (messages on)" : ""}`);
} catch (e) {
  console.error(`ctmock-server: cannot listen on 127.0.0.1:${port}: ${e.message}`);
  process.exit(1);
}
