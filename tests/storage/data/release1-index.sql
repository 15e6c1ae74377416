-- An index made by nvr release 1 (git d14f15c) with tests/storage/data/mk_release1.py's steps;
-- tests/storage/test_migrations.py upgrades it in place.
BEGIN TRANSACTION;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO "audit" VALUES(1,1796189241971,'officer','evidence','hold.place','hold-1','{"case":"CASE-1"}','0000000000000000000000000000000000000000000000000000000000000000','2ebbfd00935aa14ca47ef2ed1310590a537619ae22006241bdf062e388ac0a1f');
CREATE TABLE cameras (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,           -- JSON of the camera's settings (URL included: the index is private)
    source TEXT NOT NULL,           -- 'config' or 'api'
    config_hash TEXT,               -- hash of the config-file entry last applied, for config cameras
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    deleted_ms INTEGER
);
INSERT INTO "cameras" VALUES('gate','{"id": "gate", "url": "rtsp://cam/gate"}','api',NULL,1796189241970,1796189241970,NULL);
CREATE TABLE checkpoints (
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    body TEXT NOT NULL,            -- canonical JSON, exactly the signed bytes
    signature TEXT NOT NULL,       -- hex
    PRIMARY KEY (camera, seq)
) WITHOUT ROWID
;
INSERT INTO "checkpoints" VALUES('yard',3,'83b6e15c7fd6d5d9e7171df8c671c36dd58d20d3027a7ad67083a8ced088285b',1764547210000,'k','{"node":"old-node"}','00');
CREATE TABLE exports (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- queued, running, done, failed
    cameras TEXT NOT NULL,          -- JSON array
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    bundle TEXT,                    -- file name under the exports directory; NULL once removed
    size INTEGER,
    sha256 TEXT,                    -- of the zip
    manifest_sha256 TEXT,
    summary TEXT,                   -- JSON: counts, verdict, excluded, gaps
    error TEXT,
    expired_ms INTEGER              -- when the bundle was removed (kept past exports.keep)
);
INSERT INTO "exports" VALUES('exp-1','queued','["yard"]',1764547200000,1764547208000,'CASE-1','court','officer','evidence',1764547200000,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE ledger (
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    record TEXT NOT NULL,          -- canonical JSON, exactly the bytes that were hashed
    hash TEXT NOT NULL,
    prev TEXT NOT NULL,
    PRIMARY KEY (camera, seq)
) WITHOUT ROWID;
INSERT INTO "ledger" VALUES('gate',0,'segment','{"camera":"gate","clock":"camera","end":"2025-12-01T00:00:02.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/gate/2025/12/01/r1-000000.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000064","object_size":1100,"partial":false,"prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":0,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":1000,"start":"2025-12-01T00:00:00.000Z","type":"segment","v":1}','68c3bd1f0d2d6a1fd7721bef718718fb9070aa094838dd280cf65ab397d4f0de','0000000000000000000000000000000000000000000000000000000000000000');
INSERT INTO "ledger" VALUES('gate',1,'segment','{"camera":"gate","clock":"camera","end":"2025-12-01T00:00:04.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/gate/2025/12/01/r1-000001.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000065","object_size":1101,"partial":false,"prev":"68c3bd1f0d2d6a1fd7721bef718718fb9070aa094838dd280cf65ab397d4f0de","seq":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000001","size":1001,"start":"2025-12-01T00:00:02.000Z","type":"segment","v":1}','df3dfeff79db3065c4d64d42de6e36bf5be8c3c8cd4107b4e05ac1305d4197af','68c3bd1f0d2d6a1fd7721bef718718fb9070aa094838dd280cf65ab397d4f0de');
INSERT INTO "ledger" VALUES('gate',2,'segment','{"camera":"gate","clock":"camera","end":"2025-12-01T00:00:06.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/gate/2025/12/01/r1-000002.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000066","object_size":1102,"partial":false,"prev":"df3dfeff79db3065c4d64d42de6e36bf5be8c3c8cd4107b4e05ac1305d4197af","seq":2,"sha256":"0000000000000000000000000000000000000000000000000000000000000002","size":1002,"start":"2025-12-01T00:00:04.000Z","type":"segment","v":1}','81e33fc0e367b55d79bf4d4a8eda4b1046bcf1787e8fa10b45c21c46af0594b6','df3dfeff79db3065c4d64d42de6e36bf5be8c3c8cd4107b4e05ac1305d4197af');
INSERT INTO "ledger" VALUES('gate',3,'segment','{"camera":"gate","clock":"camera","end":"2025-12-01T00:00:08.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/gate/2025/12/01/r1-000003.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000067","object_size":1103,"partial":false,"prev":"81e33fc0e367b55d79bf4d4a8eda4b1046bcf1787e8fa10b45c21c46af0594b6","seq":3,"sha256":"0000000000000000000000000000000000000000000000000000000000000003","size":1003,"start":"2025-12-01T00:00:06.000Z","type":"segment","v":1}','8a7df52b4ce3ff314a1b8307664de8b2783ccc9e5ce170aeb8a6f73fcd4253ef','81e33fc0e367b55d79bf4d4a8eda4b1046bcf1787e8fa10b45c21c46af0594b6');
INSERT INTO "ledger" VALUES('gate',4,'tombstone','{"camera":"gate","deleted_at":"2025-12-01T00:01:00.000Z","node":"old-node","object_key":"segments/gate/2025/12/01/r1-000000.mp4","prev":"8a7df52b4ce3ff314a1b8307664de8b2783ccc9e5ce170aeb8a6f73fcd4253ef","rule":"max_age","segment_record":"68c3bd1f0d2d6a1fd7721bef718718fb9070aa094838dd280cf65ab397d4f0de","segment_seq":0,"seq":4,"type":"tombstone","v":1}','d201c509b185a55a01cd8050c5d3be2bc73ef0dce93e572b7213686707edf777','8a7df52b4ce3ff314a1b8307664de8b2783ccc9e5ce170aeb8a6f73fcd4253ef');
INSERT INTO "ledger" VALUES('yard',0,'segment','{"camera":"yard","clock":"camera","end":"2025-12-01T00:00:02.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/yard/2025/12/01/r1-000000.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000064","object_size":1100,"partial":false,"prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":0,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","size":1000,"start":"2025-12-01T00:00:00.000Z","type":"segment","v":1}','ff6a32c3d4918b1af4bbdcf7ee7f480490161a260d39e29016c8e81fad637711','0000000000000000000000000000000000000000000000000000000000000000');
INSERT INTO "ledger" VALUES('yard',1,'segment','{"camera":"yard","clock":"camera","end":"2025-12-01T00:00:04.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/yard/2025/12/01/r1-000001.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000065","object_size":1101,"partial":false,"prev":"ff6a32c3d4918b1af4bbdcf7ee7f480490161a260d39e29016c8e81fad637711","seq":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000001","size":1001,"start":"2025-12-01T00:00:02.000Z","type":"segment","v":1}','433771fa60cb1c9e54b067746dcfc7dc13b9c2ce42a7f8a745f130effec2c60e','ff6a32c3d4918b1af4bbdcf7ee7f480490161a260d39e29016c8e81fad637711');
INSERT INTO "ledger" VALUES('yard',2,'segment','{"camera":"yard","clock":"camera","end":"2025-12-01T00:00:06.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/yard/2025/12/01/r1-000002.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000066","object_size":1102,"partial":false,"prev":"433771fa60cb1c9e54b067746dcfc7dc13b9c2ce42a7f8a745f130effec2c60e","seq":2,"sha256":"0000000000000000000000000000000000000000000000000000000000000002","size":1002,"start":"2025-12-01T00:00:04.000Z","type":"segment","v":1}','970b7f4eddc4d323bdd79540dc56709e6bd5899c80c3b7765a9617f9ea6469b4','433771fa60cb1c9e54b067746dcfc7dc13b9c2ce42a7f8a745f130effec2c60e');
INSERT INTO "ledger" VALUES('yard',3,'segment','{"camera":"yard","clock":"camera","end":"2025-12-01T00:00:08.000Z","key_id":"20251201T000000Z-00000000","node":"old-node","object_key":"segments/yard/2025/12/01/r1-000003.mp4","object_sha256":"0000000000000000000000000000000000000000000000000000000000000067","object_size":1103,"partial":false,"prev":"970b7f4eddc4d323bdd79540dc56709e6bd5899c80c3b7765a9617f9ea6469b4","seq":3,"sha256":"0000000000000000000000000000000000000000000000000000000000000003","size":1003,"start":"2025-12-01T00:00:06.000Z","type":"segment","v":1}','83b6e15c7fd6d5d9e7171df8c671c36dd58d20d3027a7ad67083a8ced088285b','970b7f4eddc4d323bdd79540dc56709e6bd5899c80c3b7765a9617f9ea6469b4');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('max_segment_ms','2000');
CREATE TABLE retention_holds (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id TEXT NOT NULL,
        cameras TEXT,                    -- JSON array; NULL: every camera
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,                  -- NULL: open-ended
        reason TEXT NOT NULL,
        expires_ms INTEGER,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        released_ms INTEGER,
        released_by TEXT,
        release_reason TEXT,
        expiry_noted INTEGER NOT NULL DEFAULT 0
    );
INSERT INTO "retention_holds" VALUES(1,'CASE-1','["yard"]',1764547200000,1764547204000,'court',NULL,1764547200000,'officer',NULL,NULL,NULL,0);
CREATE TABLE retention_legal_holds (
        segment_id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        object_key TEXT NOT NULL,
        version_id TEXT,
        set_ms INTEGER NOT NULL
    );
CREATE TABLE retention_pending (
        segment_id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        marked_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
CREATE TABLE retention_rules (
        version INTEGER PRIMARY KEY,     -- 1, 2, 3...; the highest is in force
        rules TEXT NOT NULL,             -- JSON of rules_to_dict
        source TEXT NOT NULL,            -- 'config' or 'api'
        config_hash TEXT,                -- hash of the config-file rules last imported (carried forward)
        changed_ms INTEGER NOT NULL,
        actor TEXT NOT NULL
    );
INSERT INTO "retention_rules" VALUES(1,'{"cameras": {}, "default": {"max_age": "30d"}, "high_watermark": 0.9, "low_watermark": 0.8}','config','75d4eb425019e641ba08a108fa7be11abbde1649b6f72dc2a4bb02fb5ed7c445',1764547200000,'config file');
CREATE TABLE retention_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        trigger TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        report TEXT
    );
INSERT INTO "retention_runs" VALUES(1,'schedule',1764547200000,1764547200000,'{"deleted": 1}');
CREATE TABLE segment_skeletons (
    id TEXT PRIMARY KEY,            -- the segment's id
    sha256 TEXT NOT NULL,           -- of the plaintext segment the skeleton describes
    skeleton BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO "segment_skeletons" VALUES('gate:0','0000000000000000000000000000000000000000000000000000000000000000',X'736B656C');
INSERT INTO "segment_skeletons" VALUES('yard:0','0000000000000000000000000000000000000000000000000000000000000000',X'736B656C');
CREATE TABLE segments (
    id TEXT PRIMARY KEY,            -- "<camera>:<seq>"
    camera TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    object_key TEXT NOT NULL UNIQUE,
    object_size INTEGER NOT NULL,
    object_sha256 TEXT NOT NULL,
    version_id TEXT,
    key_id TEXT NOT NULL,
    record_hash TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'stored',
    ingested_ms INTEGER NOT NULL,
    UNIQUE (camera, seq)
);
INSERT INTO "segments" VALUES('gate:0','gate',0,1764547200000,1764547202000,0,1000,'0000000000000000000000000000000000000000000000000000000000000000','segments/gate/2025/12/01/r1-000000.mp4',1100,'0000000000000000000000000000000000000000000000000000000000000064',NULL,'20251201T000000Z-00000000','68c3bd1f0d2d6a1fd7721bef718718fb9070aa094838dd280cf65ab397d4f0de','deleted',1796189241955);
INSERT INTO "segments" VALUES('gate:1','gate',1,1764547202000,1764547204000,0,1001,'0000000000000000000000000000000000000000000000000000000000000001','segments/gate/2025/12/01/r1-000001.mp4',1101,'0000000000000000000000000000000000000000000000000000000000000065',NULL,'20251201T000000Z-00000000','df3dfeff79db3065c4d64d42de6e36bf5be8c3c8cd4107b4e05ac1305d4197af','stored',1796189241956);
INSERT INTO "segments" VALUES('gate:2','gate',2,1764547204000,1764547206000,0,1002,'0000000000000000000000000000000000000000000000000000000000000002','segments/gate/2025/12/01/r1-000002.mp4',1102,'0000000000000000000000000000000000000000000000000000000000000066',NULL,'20251201T000000Z-00000000','81e33fc0e367b55d79bf4d4a8eda4b1046bcf1787e8fa10b45c21c46af0594b6','stored',1796189241957);
INSERT INTO "segments" VALUES('gate:3','gate',3,1764547206000,1764547208000,0,1003,'0000000000000000000000000000000000000000000000000000000000000003','segments/gate/2025/12/01/r1-000003.mp4',1103,'0000000000000000000000000000000000000000000000000000000000000067',NULL,'20251201T000000Z-00000000','8a7df52b4ce3ff314a1b8307664de8b2783ccc9e5ce170aeb8a6f73fcd4253ef','stored',1796189241958);
INSERT INTO "segments" VALUES('yard:0','yard',0,1764547200000,1764547202000,0,1000,'0000000000000000000000000000000000000000000000000000000000000000','segments/yard/2025/12/01/r1-000000.mp4',1100,'0000000000000000000000000000000000000000000000000000000000000064',NULL,'20251201T000000Z-00000000','ff6a32c3d4918b1af4bbdcf7ee7f480490161a260d39e29016c8e81fad637711','stored',1796189241960);
INSERT INTO "segments" VALUES('yard:1','yard',1,1764547202000,1764547204000,0,1001,'0000000000000000000000000000000000000000000000000000000000000001','segments/yard/2025/12/01/r1-000001.mp4',1101,'0000000000000000000000000000000000000000000000000000000000000065',NULL,'20251201T000000Z-00000000','433771fa60cb1c9e54b067746dcfc7dc13b9c2ce42a7f8a745f130effec2c60e','stored',1796189241960);
INSERT INTO "segments" VALUES('yard:2','yard',2,1764547204000,1764547206000,0,1002,'0000000000000000000000000000000000000000000000000000000000000002','segments/yard/2025/12/01/r1-000002.mp4',1102,'0000000000000000000000000000000000000000000000000000000000000066',NULL,'20251201T000000Z-00000000','970b7f4eddc4d323bdd79540dc56709e6bd5899c80c3b7765a9617f9ea6469b4','stored',1796189241961);
INSERT INTO "segments" VALUES('yard:3','yard',3,1764547206000,1764547208000,0,1003,'0000000000000000000000000000000000000000000000000000000000000003','segments/yard/2025/12/01/r1-000003.mp4',1103,'0000000000000000000000000000000000000000000000000000000000000067',NULL,'20251201T000000Z-00000000','83b6e15c7fd6d5d9e7171df8c671c36dd58d20d3027a7ad67083a8ced088285b','stored',1796189241962);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    cameras TEXT,                   -- JSON array, NULL: every camera
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
INSERT INTO "tokens" VALUES('wall','viewer','["gate"]','cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc',1796189241970,NULL);
CREATE INDEX segments_camera_start ON segments (camera, start_ms);
CREATE INDEX segments_camera_end ON segments (camera, end_ms);
CREATE TRIGGER segments_longest AFTER INSERT ON segments BEGIN
    INSERT INTO meta (key, value) VALUES ('max_segment_ms', CAST(NEW.end_ms - NEW.start_ms AS TEXT))
    ON CONFLICT (key) DO UPDATE
    SET value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT);
END;
CREATE INDEX audit_ts ON audit (ts_ms);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('retention_holds',1);
INSERT INTO "sqlite_sequence" VALUES('retention_runs',1);
COMMIT;
