"""The rtecs wire format: every message, its fields, and the MessagePack codec.

Every frame is one MessagePack array whose first element is the message kind.
Decoding is strict: anything malformed raises :class:`~rtecs.errors.ProtocolError`
and nothing else. Arrays decode as tuples (so model ids are hashable).

Client → server
    ``HELLO   [1, version, room, root_type, schema, token]``
        ``version`` is :data:`PROTOCOL_VERSION`; ``room`` the room name (1 to
        :data:`MAX_ROOM_NAME` printable characters: :func:`check_room_name`); ``root_type`` the
        type name of the room model; ``schema`` maps type name → {property id → [name, tag,
        reliable]} (tags: see :mod:`rtecs.model`); ``token`` a string or nil.
    ``UPDATE  [2, seq, changes, epoch]``
        One frame's delta. ``seq`` counts 1, 2, 3… within a session *epoch*: every welcome
        starts a new epoch (named in the ``WELCOME``) and every update names the epoch it was
        numbered in. The server applies only updates of the current epoch, each exactly
        once and in order: an older epoch's update is dropped (it was sent before the client
        saw its new welcome, which told it what became of it), a duplicate is dropped
        silently (its answer is already in the stream), a gap is answered with a resync.
    ``PING    [3, client_time, epoch]``
        ``epoch`` is the session epoch of the last ``WELCOME`` the client applied (0 before
        the first): it tells the server the client has read that welcome, so the server
        sends a client that never reads no more snapshots (see ``RESYNC``).
    ``BYE     [4]``
    ``RESYNC  [5]``
        Ask for a fresh WELCOME (sent when this client cannot reconstruct the room's state by
        itself: a hole in the stream — a ``room_seq`` gap, a malformed frame, an error while
        applying — or a refused destroy that raced with creates under the destroyed model).
    ``RESUME  [7, room, session_id, session_secret, epoch, room_seq, incarnation]``
        Take up a session again over a fresh connection (DESIGN §8): the ``session_id`` and
        ``session_secret`` of the last ``WELCOME`` or ``RESUMED``, the ``epoch`` the client's
        unanswered updates are numbered in, the ``room_seq`` of the last batch it applied and
        the stream's ``incarnation`` it was in. Sent instead of a ``HELLO`` and authenticated
        by the secret alone (a routing id never is). Answered ``RESUMED``, or a ``WELCOME``
        (a new epoch: the missed batches are gone, or the room was loaded again), or
        ``ERROR session_unknown`` (no such session here, or not that secret: join again
        with ``HELLO``).
    ``SCHEMA  [6, schema]``
        Model types this client first uses after joining (same shape as the hello's
        ``schema``). The room merges them, all or nothing, before the client's next update;
        a contradiction is answered ``ERROR schema`` (not fatal) and creates of those types
        are then refused.

Server → client
    ``WELCOME [10, client_id, room_seq, server_time, snapshot, clients, epoch, last_applied,
    limits, session_id, session_secret, incarnation]``
        Sent on join and again whenever the client must resync. ``snapshot`` is a list of
        model records ``[model_id, type_name, owner_id, flags, {property id: value}, parent,
        key]`` (:class:`SnapshotRecord`), parents before children and dynamic models in the
        order the room created them; ``parent`` is the parent's id for a dynamic model
        created under a parent (else nil) and ``key`` its key for an element of a keyed
        collection (else nil; see *Collections*); properties never written are absent (the
        client keeps its defaults). ``clients``
        lists the client ids present. ``room_seq`` is the sequence number of the last batch
        the snapshot includes. ``epoch`` numbers the session's updates from now on (1 at the
        join, one more at every resync). ``last_applied`` is the seq of the last update of
        the previous epoch the server applied (0 at a join): the snapshot includes it and
        everything before it, and nothing after it, so the client drops its pending writes
        up to it and renumbers the rest into the new epoch and sends them again — re-based
        on the snapshot, not rolled back. ``limits`` maps limit names to ints, the values
        the client must respect (unknown names are ignored): ``update_bytes`` (largest
        update frame), ``datastore_bytes`` (largest room), ``depth`` (deepest nesting of
        models, in levels; the room model is level 1). ``session_id (bytes) names the
        session and ``session_secret`` (bytes, unguessable, rotated at every resume; the
        server keeps only its hash) is what a ``RESUME`` must show; both are empty from a
        server that cannot resume sessions. ``incarnation`` names the room's stream: it
        changes whenever the room is loaded, and a session resumed into another incarnation
        gets a ``WELCOME``, never ``RESUMED``.
    ``RESUMED [15, client_id, epoch, last_applied, room_seq, server_time, incarnation,
    session_secret, limits]``
        A ``RESUME`` found its session: same client id, same ``epoch``. ``last_applied`` is
        the seq of the last update of this epoch the server applied: the client drops its
        pending writes up to it and sends the unanswered ones after it again, which the
        server applies exactly once. The batches after the resume's ``room_seq`` up to this
        message's ``room_seq`` follow at once from the room's history. ``session_secret`` is
        the new secret (the old one is spent).
    ``BATCH   [11, room_seq, server_time, entries]``
        What the room ordered in one server tick, encoded once and sent to every member.
        ``room_seq`` grows by one per batch. Entries, in order:

        - ``[0, sender, seq, changes, rejected]`` — client ``sender``'s update ``seq`` as the
          room applied it: the accepted changes (with the server's transformed values) and
          ``rejected``, a list of ``[model_id, key]`` that were refused (no values: the
          stream before this entry already holds the authoritative value). ``sender`` 0 is
          the server itself (lifetime destroys, cleared ownership; ``seq`` 0).
        - ``[1, client_id]`` — a client joined.
        - ``[2, client_id]`` — a client left.
    ``PONG    [12, client_time, server_time, room_seq]``
        ``room_seq`` is the room's last batch, so a client notices a lost last batch: the
        server sends every batch before the pong that counts it. A ping from a peer with no
        session is answered ``ERROR not_joined``, never ``PONG``.
    ``ERROR   [13, code, message, fatal]``
        ``code`` is one of :class:`ErrorCode`; ``fatal`` true means the server dropped the
        session. A client reconnects (with backoff) after ``shutdown``, ``unavailable`` and
        ``not_joined``, and gives up after any other fatal code.
    ``REDIRECT [14, endpoint, room]``
        The answer to a ``HELLO`` sent to a server instance that does not host ``room``:
        another instance does, and clients reach it at ``endpoint`` (a non-empty ZeroMQ
        endpoint such as ``tcp://10.0.0.7:7777``; an instance's ``--advertise``). No session
        was opened. The client closes this connection, connects to ``endpoint`` and sends
        its ``HELLO`` there; a redirect is not a failed attempt, but a client gives up after
        several redirects in a row without a ``WELCOME`` (a loop). ``room`` repeats the
        hello's room name; a client ignores a redirect for another room.

Changes
    A list of *runs*. A run is ``[model_id, key, value, key, value, …]`` (odd length ≥ 3):
    consecutive changes to one model share its id. Order is the writer's order and matters
    (the server checks each change where it falls). Keys:

    - ``1…`` a property id; the value is bool, int, float, str, bytes or nil. Floats of
      ``f32`` properties travel as MessagePack float32 (5 bytes), every other float as
      float64.
    - ``0`` (:data:`OWNER`) the model's owner id (-1 = unowned).
    - ``-1`` (:data:`CREATE`) creates a dynamic model; the value is ``[type_name, flags]``
      (flags: :data:`PREVENT_OWNERSHIP_TAKEOVER`, :data:`DESTROY_WHEN_OWNER_LEAVES`,
      :data:`DESTROY_WHEN_LAST_CLIENT_LEAVES`), or ``[type_name, flags, parent_id]`` for a
      dynamic model that belongs to another (an entity's component, a collection's element):
      the parent's ownership covers it and destroying the parent destroys it. Its initial
      values follow as ordinary changes; its declared children exist with it.
      ``[type_name, flags, parent_id, key]`` creates an element of a keyed collection at
      ``key`` (an int or a string), replacing — destroying, in the same change — the element
      at that key, if any; ``[type_name, flags, parent_id, key, expected]`` does so only if
      the element at ``key`` is ``expected`` (a model id, or nil for "no element"), and is
      rejected otherwise. Everyone who sees an accepted keyed create applies the same rule.
    - ``-2`` (:data:`DESTROY`) destroys a dynamic model and its children; the value is nil.

Collections
    A collection is a declared child model with no properties whose type is named
    ``rtecs.<Kind><<Element>>`` (:func:`collection_type_name`): ``rtecs.Set<Item>``,
    ``rtecs.Array<Item>``, ``rtecs.Dict<Item>``, ``rtecs.StrDict<Item>``. Its elements are
    dynamic models of exactly the element type created under it; removing one is a
    ``DESTROY`` of it. The server accepts, under a collection, only creates of its element
    type: unkeyed under a ``Set`` or ``Array``, ``[…, key]`` with an int key under a
    ``Dict`` (last writer wins), ``[…, key, expected]`` with a string key under a
    ``StrDict`` (transactional); keyed creates anywhere else are bad input.

Model ids
    ``0`` is the room model; dynamic models have the int :func:`dynamic_model_id` of
    (creating client id, counter), so clients allocate ids without a round trip and ids never
    collide; a declared child model is its parent's id extended by the property id, as an
    array: ``[0, 3]`` is property 3 of the room model, ``[17, 2, 1]`` a grandchild.
"""

from __future__ import annotations

from rtecs.protocol._codec import (
    MAX_ROOM_NAME,
    check_changes,
    check_room_name,
    check_snapshot_record,
    decode_client_message,
    decode_server_message,
    encode,
)
from rtecs.protocol._messages import (
    ALL_FLAGS,
    COLLECTION_KINDS,
    CREATE,
    DEFAULT_LIMITS,
    DESTROY,
    DESTROY_WHEN_LAST_CLIENT_LEAVES,
    DESTROY_WHEN_OWNER_LEAVES,
    INT_MAX,
    INT_MIN,
    NO_SESSION,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    PROTOCOL_VERSION,
    UPDATE_OVERHEAD,
    Batch,
    Bye,
    Changes,
    ClientMessage,
    Error,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    ModelId,
    Ping,
    Pong,
    Redirect,
    Resume,
    Resumed,
    Resync,
    Schema,
    SchemaSpec,
    ServerMessage,
    SnapshotRecord,
    Update,
    UpdateEntry,
    Welcome,
    collection_type_name,
    count_changes,
    dynamic_model_id,
    is_model_id,
    split_collection_type,
    split_dynamic_model_id,
)
from rtecs.protocol._values import F32, SCALAR_TAGS, Value, check_tag, coerce_value, enc_hook

__all__ = [
    "F32", "SCALAR_TAGS", "check_tag", "coerce_value", "enc_hook",
    "ALL_FLAGS", "CREATE", "DESTROY", "OWNER", "PROTOCOL_VERSION", "INT_MIN", "INT_MAX",
    "check_changes", "check_room_name", "check_snapshot_record", "MAX_ROOM_NAME",
    "DEFAULT_LIMITS", "NO_SESSION",
    "PREVENT_OWNERSHIP_TAKEOVER", "DESTROY_WHEN_OWNER_LEAVES", "DESTROY_WHEN_LAST_CLIENT_LEAVES",
    "Limits", "UPDATE_OVERHEAD", "ErrorCode", "ModelId", "Value", "Changes",
    "Hello", "Resume", "Update", "Ping", "Bye", "Resync", "Schema", "SchemaSpec",
    "Welcome", "Resumed", "Batch", "Pong", "Error", "Redirect", "SnapshotRecord",
    "UpdateEntry", "JoinEntry", "LeaveEntry", "ClientMessage", "ServerMessage",
    "encode", "decode_client_message", "decode_server_message",
    "dynamic_model_id", "split_dynamic_model_id", "is_model_id",
    "COLLECTION_KINDS", "collection_type_name", "split_collection_type", "count_changes",
]
