"""moto's server, with five fixes: SQS deletes that cannot lose a message, queue counts taken at
one instant, DynamoDB transactions that cannot undo other requests' writes, and transactions and
key queries whose cost does not grow with the table (`_transactions_restore_only_their_items`,
`_table_queries_read_one_partition`).

moto 5.2.5's `Queue.delete_message` rebuilds the queue's message list without holding the
queue's lock, while `add_message` appends under it. The server is threaded, so a SendMessage to
a queue that lands while another request's DeleteMessage on the same queue is rebuilding the
list is lost (the rebuilt list, taken before the append, replaces the list that had it), two
concurrent deletes can bring a deleted message back, and two concurrent receives can both take
the same message. Real SQS does neither. The relay's
stages send a follow-up and then delete the message they handled, ten at a time per batch, so
under load the emulator lost status messages (a document left SENT with no message on any
queue: issue 11). `scripts/moto_race.py` shows the race on the unpatched server.

moto 5.2.5's GetQueueAttributes computes each requested count in its own pass over the queue,
each at its own clock reading. A message whose delay (or visibility timeout) ends between the pass
for ApproximateNumberOfMessages and the one for ApproximateNumberOfMessagesDelayed is counted in
neither, so a queue holding one delayed status check could answer 0/0/0: a test pump waiting for
empty queues stopped while a document's follow-up was still on its way (a document left SENT, no
message anywhere: issue 11's CI failure). Here the counts are taken under the queue's lock at one
instant. (Real SQS's counts are approximate too: the relay never decides anything from them; the
local runner also waits until no document is open, and sweeps.)

moto 5.2.5's DynamoDB `transact_write_items` takes a deep copy of every table it touches before
it starts and, when any condition fails, puts those copies back: every write another request made
to the same table in the meantime is undone, although its caller was told it succeeded. Nothing
in moto's DynamoDB backend holds a lock. The relay's stages write one document while another
request's conditional write on the same table fails (two uploads of one invoice registering at
once, a refused claim), so under load a committed state change vanished (a document back in
SENT after its ACCEPTED was written and its message deleted: issue 11). Real DynamoDB isolates
every request. Here every DynamoDB backend operation holds one lock, so requests to it run one at
a time. `scripts/moto_race.py` shows all three on the unpatched server.

Usage: the same arguments as `moto_server` (`-H 127.0.0.1 -p PORT`).
"""

import functools
import inspect
import sys
import threading

from moto.sqs import models


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        # The queue's Condition wraps an RLock: the add_message it may wait on is not reached
        # from a delete, so holding it here cannot deadlock.
        with self._messages_lock:
            return method(self, *args, **kwargs)

    return wrapper


models.Queue.delete_message = _locked(models.Queue.delete_message)


def _receive_locked(method):
    @functools.wraps(method)
    def wrapper(self, queue_name, *args, **kwargs):
        # Two concurrent receives could both take the same visible message (each marks it
        # received outside any lock); the queue's lock makes taking a message atomic. A long
        # poll waits on the same Condition, which releases the lock while it waits.
        with self.get_queue(queue_name)._messages_lock:
            return method(self, queue_name, *args, **kwargs)

    return wrapper


models.SQSBackend.receive_message = _receive_locked(models.SQSBackend.receive_message)


_clock = threading.local()
_real_unix_time_millis = models.unix_time_millis


def _unix_time_millis(*args, **kwargs):
    # Inside a GetQueueAttributes snapshot every message is judged at one instant.
    frozen = getattr(_clock, "frozen", None)
    return frozen if frozen is not None else _real_unix_time_millis(*args, **kwargs)


models.unix_time_millis = _unix_time_millis


def _attributes_at_one_instant(method):
    @functools.wraps(method)
    def wrapper(self, queue_name, *args, **kwargs):
        # moto computes each requested attribute from a separate pass over the queue, each at its
        # own clock reading (ApproximateNumberOfMessages, then ...NotVisible, then ...Delayed),
        # so a message whose delay or visibility timeout ends between two passes is counted in
        # none of them: a queue holding one delayed message could answer 0, 0, 0, and a runner
        # waiting for empty queues stopped with a document's follow-up still on its way (issue
        # 11). Here the counts are taken under the queue's lock at one instant.
        _clock.frozen = _real_unix_time_millis()
        try:
            with self.get_queue(queue_name)._messages_lock:
                return method(self, queue_name, *args, **kwargs)
        finally:
            _clock.frozen = None

    return wrapper


models.SQSBackend.get_queue_attributes = _attributes_at_one_instant(models.SQSBackend.get_queue_attributes)


def _serialize_dynamodb():
    from moto.dynamodb.models import DynamoDBBackend

    # Re-entrant: a transaction calls the backend's own get_item/put_item while holding it.
    lock = threading.RLock()

    def serialized(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name, attr in list(vars(DynamoDBBackend).items()):
        # Plain methods only: static methods and properties keep their own binding.
        if inspect.isfunction(attr) and not name.startswith("_"):
            setattr(DynamoDBBackend, name, serialized(attr))


def _transactions_restore_only_their_items():
    """A failed transaction puts back the items it touched, not deep copies of whole tables.

    moto's `transact_write_items` deep-copies every table a transaction names before it starts,
    so each transaction costs time and memory in the size of the table: a `load` of 2,000
    invoices on the emulator (tens of thousands of items) slowed to about a file a second with
    the server at 10 GB. Every DynamoDB backend operation holds one lock here (below), so nothing
    else writes while a transaction runs: keeping the touched items' old values (or their
    absence) is enough to undo it, and that is what this does. The whole-table copy is made a
    no-op for the duration of the call (its rollback then puts back the same table object).
    """
    from moto.dynamodb import models as ddb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    real_copy = ddb_models.copy

    class _TablesNotCopied:
        @staticmethod
        def deepcopy(x, *args, **kwargs):
            return x if isinstance(x, Table) else real_copy.deepcopy(x, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(real_copy, name)

    original = DynamoDBBackend.transact_write_items

    def touched(backend, transact_items):
        keys = []
        for item in transact_items:
            for op_type, op in item.items():
                table_name = op.get("TableName")
                if not table_name or table_name not in backend.tables:
                    continue
                table = backend.tables[table_name]
                if op_type == "Put":
                    attrs = op.get("Item", {})
                    if table.hash_key_attr not in attrs:
                        continue
                    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        if table.range_key_attr not in attrs:
                            continue
                        key[table.range_key_attr] = attrs[table.range_key_attr]
                elif "Key" in op:
                    key = op["Key"]
                else:
                    continue
                keys.append((table_name, key))
        return keys

    def transact_write_items(self, transact_items):
        before = []
        for table_name, key in touched(self, transact_items):
            try:
                current = self.get_item(table_name, key)
            except Exception:
                continue
            before.append((table_name, key, current.to_json()["Attributes"] if current is not None else None))
        ddb_models.copy = _TablesNotCopied()
        try:
            return original(self, transact_items)
        except Exception:
            # Undo in reverse order, each touched item back as it was before the call.
            for table_name, key, attrs in reversed(before):
                if attrs is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, real_copy.deepcopy(attrs))
            raise
        finally:
            ddb_models.copy = real_copy

    DynamoDBBackend.transact_write_items = transact_write_items


def _table_queries_read_one_partition():
    """A Query on a table's own key reads that partition, not the whole table.

    moto's `Table.query` without an index lists and sorts every item of the table
    (`all_items`) and then keeps those with the asked partition key: each `Query pk = :pk` costs
    time in the size of the table (300 to 500 ms at 8,000 items, measured during a 2,000-invoice
    `load`), so a long run slows down quadratically. Here such a query sees only its partition's
    items (`self.items[hash_key]`, where moto keeps them); filtering, sorting and paging are moto's
    own. Index queries are left as they are. Every DynamoDB backend call holds one lock (below),
    so nothing changes the table while the query runs.
    """
    from moto.dynamodb.models.table import Table

    original = Table.query
    params = list(inspect.signature(original).parameters)

    def query(self, *args, **kwargs):
        bound = dict(zip(params[1:], args))
        bound.update(kwargs)
        hash_key = bound.get("hash_key")
        if bound.get("index_name") is not None or hash_key is None:
            return original(self, *args, **kwargs)
        partition = self.items.get(hash_key)
        if partition is None:
            items = []
        elif self.range_key_attr:
            items = list(partition.values())
        else:
            items = [partition]
        self.all_items = lambda: items
        try:
            return original(self, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


_transactions_restore_only_their_items()
_table_queries_read_one_partition()
_serialize_dynamodb()

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
