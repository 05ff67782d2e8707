//! Seeds that once found a defect, kept as regression cases: CI runs them first
//! (`gfs-sim --pinned`), each with the load it was found at.

/// Seeds that once found a defect, with the seconds of load they were found at:
/// - 4: a chunkserver whose WAL fsync failed kept serving a store that took no writes, and a
///   chunk whose other replica was gone could take no version bump for good;
/// - 14: a replica deleted and copied back under its handle was emptied by the WAL replay
///   after a power cut;
/// - 17: a heartbeat channel whose connection silently stopped carrying bytes was never
///   replaced (no HTTP/2 keepalive), so the master declared a live server dead for good;
/// - 134: the checker compared the disks with a view the master was still changing (an
///   extra replica being deleted): it now waits for the view to hold still;
/// - 165: the same, for longer: a server whose replies were cut one way had deleted replicas
///   the master still listed until its connection was replaced (the view must now hold still
///   longer than that takes);
/// - 23, 1411: a replica of a sealed chunk left ahead of the log by a fence that reached
///   fewer than a quorum stayed on its disk for good, unseen by fsck.
/// - 73: a bit flipped at rest in one of an unsealed chunk's two replicas left it on the other
///   alone for good: the seal it needs before any copy wanted a quorum of good replicas (the
///   corrupt one now counts toward the fence);
/// - 17538096980818 (found fresh): a fence cut short reached a replica whose reply and reports
///   were lost; the next bump reused its version, and that replica, holding other bytes, was
///   counted current (fences now never reuse a version they sent);
/// - 17538096960526 (found fresh; 17538096968010 earlier showed the same): a primary whose disk
///   filled failed to commit an append its secondary committed, and readers were shown those
///   bytes, which no quorum held and a later lease replaced: a secondary now shows only what
///   its primary last said a quorum holds;
/// - 139 (with the aimed faults and disk latency): a primary crashed before its first
///   watermark; a secondary that had committed bytes alone showed them to readers, and the
///   next lease wrote others there: a replica now vouches only for what its version was
///   created or fenced at until its primary tells;
/// - 419 (with the aimed faults): a get right after an acknowledged put came back short by the
///   last piece: the last chunk's primary was unreachable and its secondaries had not heard
///   the final watermark; a writer's finish now flushes it to them;
/// - 146 (a checker defect): a server restarting after a crash held an acknowledged record in
///   its log only, not yet replayed into the chunk file; the durability check now reads the
///   log's appends with their chunks;
/// - 167 (a checker defect): a bit the nemesis flipped landed in a record a replica had just
///   replayed from its log; the check now parses a flipped file with the byte put back;
/// - 423, 426 (with the strike that cuts a primary from its other secondary as one lags): a
///   primary whose secondaries failed to commit held a tail alone, restarted, and showed it to
///   a reader; the next lease, decided without it, wrote other bytes there (a replica found at
///   start now serves no unsealed chunk until told, and the master settles such chunks);
/// - 52 (found with that change): a corrupt replica of an unsealed chunk was deleted because
///   two others were current, one of them empty, leaving acknowledged appends on one disk;
/// - 268: an old primary holding a tail alone took a fence whose reply the master did not
///   decide from, and vouched for its whole length at the new version: a reader saw the tail,
///   which the next lease replaced (a version change now vouches only for what was known);
/// - 215: a lease decision went on from the chunk as it was before it waited for the chunk's
///   lock, and sealed it again at another length: a record the client had been told was not
///   there was, and the client had appended it elsewhere (a duplicate). (337 showed the same
///   race first);
/// - 132, 337: the master sealed a chunk at a length one replica alone held (the others failed
///   their checksums, a disk filled, a catch-up failed), and that sealed replica answered a
///   retried op in the tail with its offset: acknowledged on one disk until the copies landed
///   (a sealed replica's word is now `SealedWith`, taken once a quorum of replicas say it).
/// - 474 (4 s of load, with the check that no append gives up before its deadline): a primary
///   whose chunk an earlier failed fsync had poisoned failed every append on it at once, and
///   kept its lease (now it gives the lease up and the client retries: `DiskFailed`; seeds 1,
///   89, 103 and more showed the same with a full disk or a failed WAL fsync).
/// - 1645 (10 s of load): a put's primary restarted (it served no read of the chunk, knowing
///   nothing of what a quorum held), then the fence before the master's seal changed its
///   version and it answered readers 0 with the put's bytes on its disk: with a replica that
///   never had them, a get returned an empty file (a version change now keeps an unknown
///   prefix unknown).
/// - 740 (10 s of load): the one replica holding an unacknowledged append had a bit flipped at
///   rest; the catch-up of the two empty replicas from it failed its checksums, and the master
///   sealed the chunk at its length all the same, leaving only the corrupt replica current (a
///   catch-up source that fails its checksums is now marked corrupt, and the seal goes by the
///   good replicas when a quorum of them answered);
/// - 867 (10 s of load; a checker defect): a bit flipped at rest in bytes a crash had left
///   unwritten, which the WAL's redo then rewrote; the checker still counted the flip unfound
///   (a flip now counts only until a durable write touches its byte: `SimDisk::still_flipped`).
/// - 9663 (10 s of load; found on b60c916, whose schedule reached it): a put's bytes only on
///   the chunk's primary, rotten at rest, one replica empty and the third never created: no
///   seal without a quorum of good replicas, and each decision fenced the empty replica alone
///   past the corrupt one, never a quorum (the corrupt ones are now fenced with the rest, and
///   the primary's word at the fence bounds what it acknowledged). Later commits move the
///   schedule away from it; the master's unit tests hold the case.
/// - 11098 (10 s of load): a sealed chunk back at four current replicas (a server returned
///   after its copy was made) went down to one: each heartbeat that told a holder to drop the
///   extra replica took that holder's report right after and listed the replica again, so the
///   next holder to heartbeat also saw one too many (what a reply deletes now leaves the
///   locations after the report is taken).
/// - 11060 (10 s of load; found on 7864ecd): a primary whose disk filled gave its lease up,
///   having acknowledged nothing; a secondary that had committed those appends alone rotted
///   at rest, and no seal could go by the good replicas: the primary's word came only from a
///   fence that ended a lease in force. A replica now says what it acknowledged under the last
///   lease it held at every fence past it, and the master keeps the word through the unleased
///   versions after it. The fix moves the schedule away; the master's unit tests hold the case.
/// - 10648 (10 s of load; found on 7864ecd, which passes it with the fix): a chunk made on two
///   servers (the third's creation failed) was written there while its primary, paused, could
///   not report the third lagging, and a bit rotted at rest on each replica: lost. A chunk
///   whose creation failed somewhere is now made again without that server, and a chunk below
///   its goal is sealed (and copied back) when a full one can follow.
/// - 12216 (10 s of load; found by finding 5's mutant run with the strike into a version
///   change, main failing it too): a put whose chunk the master sealed went on in the next
///   chunk, which the master sealed as well (a replica of it lagged); the writer's second
///   recovery took that for another writer's seal and failed the put (it now recovers again).
/// - 30643 (10 s of load; found on e29e623, which the restore moved onto this schedule): a
///   copy to a server reported its new replica, failed and deleted it; the master's seal of
///   the chunk there was answered NOT_FOUND and noted the replica again, every retry, so no
///   report dropped it and a sealed chunk was counted current on a server holding nothing. A
///   seal answered NOT_FOUND now forgets the replica.
/// - 40853 (10 s of load; found on 243bb9b): a lease's primary committed a tail alone,
///   restarted and rotted; of the good replicas one was empty and the other, empty too, came
///   back at the lease's version after fences had moved the rest on: never fenced again, so
///   one good replica could not seal. A replica at or past the last lease's version is now a
///   witness for the seal; and an idle unsealed chunk with a corrupt replica is sealed, so
///   that the corrupt one can go.
/// - 13798 (10 s of load; found on e548f8e by finding 5's mutant run, main failing it too): a
///   put's chunk made on two servers (the third's disk was full), its primary's tail alone on
///   its replica, which rotted; the one other replica was empty, the primary restarted without
///   a word, and the seal waited for good for the third. Bad blocks are now restored in place
///   from the other replicas; and a server whose creation of the chunk failed, fenced with the
///   others, is a witness of length 0 when it answers that it holds no replica and has neither
///   registered again nor lost its disk since (it refuses a late creation below that fence).
/// - 274246788388944 (20 s of load; found by a soak on 2026-12-06, main failing it too): the
///   fsync of a block restored from a peer failed and poisoned the replica, but only a failed
///   fsync in a batch made the store ask to be reopened: the chunkserver kept serving a replica
///   that refused every fence, the chunk's one other replica could take no version alone, and
///   fsck called the chunk lost for good. A fsync failed anywhere now stops the server for a
///   restart, which replays the WAL. (Its trace hash was not stable before: CI's static build
///   replaced the `--cfg tokio_unstable` that lets turmoil seed tokio; the build now names it
///   again, and gfs-sim refuses to build without it.)
/// - 90477443447776 (20 s of load; found by a soak on 2026-12-06, main failing it too): a
///   primary that had given up its lease (its disk full) was fenced, then sealed the chunk at
///   its own length on itself and on a secondary the fence had not reached yet; the master
///   sealed the chunk at a third replica's longer length, holding records clients, told by
///   the sealed replicas that the chunk ended without them, had appended again in the next
///   chunk: two records twice. A seal now names its version (a fenced replica refuses it), a
///   fence that finds a replica sealed seals the chunk there, and a client takes "sealed
///   without the op" only from a quorum of replicas at one length, or from one at the length
///   the master's log sealed the chunk at. Replayed on the fix, the
///   run is the same up to the race; there the secondary refuses the seal (it is at the
///   fence's version), the primary's seal does not reach a quorum, and the master seals the
///   chunk at the longest length on all three, the records in it once.
/// - 73346212800128 (20 s of load; found by a soak on 2026-12-06 of the fix above, its cause
///   older): a liveness failure. A chunk's creation failed on cs2 (disk full); its primary's
///   replica rotted and the one other replica was empty, so only cs2's "none here" could
///   witness that the chunk ended at 0 (seed 13798), and that counted only during the
///   master's and cs2's current processes: both had restarted, and the chunk was never sealed.
///   Data directories now have an identity, the log names the servers a creation failed on
///   with theirs, and a server registered again on the same directory is a witness still.
/// - 228949108538562 (20 s of load, one round per append; found by a soak on 2026-12-06): a
///   chunk on two servers, its primary cut off, committed appends alone; the master restarted
///   and adopted the primary's lease before its secondary registered again, so the lease it
///   handed out listed the primary alone; later the master sealed the chunk at the primary's
///   length (the secondary's catch-up failed), and two clients resolving retried appends took
///   that one sealed replica's `SealedWith` for a majority of one: acknowledged on one disk
///   for five seconds. A lease now says how many replicas it has (`members`), listed or not.
/// - 228949108538566 (20 s of load, one round per append; found by the same soak): a liveness
///   failure. A put's chunk placed on the only two servers alive, its primary's tail alone on
///   its replica, which rotted; the other replica empty, the primary without a word: the seal
///   wanted a quorum of good replicas, a rule for three members, and waited for good. The log
///   now says how many servers a chunk was placed on, and one good replica of two suffices.
/// - 148412570704197 (20 s of load, one round; found by a later soak): a retry of an op
///   committed on its primary alone read the bytes back there to send them again, and they had
///   rotted: the checksum error reached the client as the append's end. The primary now gives
///   the lease up (`DiskFailed`) and the client retries.
/// - 192902363027571 (20 s of load, two rounds; found by a later soak): the master logged a
///   put's last chunk sealed and crashed with its seal calls to the replicas in flight; the
///   replicas stayed unsealed at the sealed length, and after the closing power cut none served
///   a read (a replica that restarts unsealed does not know what a quorum holds of it). A
///   report of an unsealed replica at a sealed chunk's version and length now has it sealed.
/// - 56860221658621 (20 s of load, two rounds; found by the same soak): a liveness failure. A
///   catch-up from the cut-off primary's replica copied a prefix, then met a flipped bit; the
///   seal went by the lengths heard before it, at 0, where no good replica still ended, and
///   the chunk was lost. A catch-up cut short now leaves the length to the next fence.
/// - 56860221659090 (20 s of load, two rounds; found by the same soak, on a build where a
///   creation no longer fsyncs the directory): the durability checker counted a log's records
///   only while the chunk's file was there, and a crash had lost a new chunk's directory entry
///   (a replay makes it again from the log's Create record). The checker now counts a chunk
///   the log creates as there.
/// - 208499017516792 (20 s of load, two rounds; found by a soak of the build that brought
///   spare chunks, which moved the schedules): a liveness failure. The primary of a chunk's
///   only lease acknowledged nothing before its secondaries were cut off; a fence that
///   reached it alone failed, reports then moved the log to an unleased version, and its
///   replica rotted. Its word (nothing acknowledged) was kept only when it spoke of the
///   logged version, so the master fenced once a second for good and the file never healed.
///   The word is now matched against the last leased version.
pub const PINNED: &[(u64, u64)] = &[
    (4, 20),
    (14, 20),
    (17, 20),
    (23, 20),
    (73, 10),
    (134, 20),
    (139, 20),
    (146, 20),
    (165, 20),
    (167, 20),
    (419, 20),
    (423, 20),
    (426, 20),
    (52, 10),
    (215, 20),
    (268, 20),
    (1411, 20),
    (17538096960526, 10),
    (17538096980818, 10),
    (132, 20),
    (337, 20),
    (474, 4),
    (1645, 10),
    (740, 10),
    (867, 10),
    (9663, 10),
    (11098, 10),
    (11060, 10),
    (10648, 10),
    (12216, 10),
    (30643, 10),
    (40853, 10),
    (13798, 10),
    (274246788388944, 20),
    (90477443447776, 20),
    (73346212800128, 20),
    (228949108538562, 20),
    (228949108538566, 20),
    (148412570704197, 20),
    (192902363027571, 20),
    (56860221658621, 20),
    (56860221659090, 20),
    (208499017516792, 20),
];
