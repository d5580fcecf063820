//! The command line: every flag and its help text. No behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Seal objects for R2 and S3 with keys you hold (age v1 envelopes).";

const AFTER_HELP: &str = "\
Examples:
  r2seal keygen -o key.txt                      # prints the recipient (age1…)
  r2seal seal -r age1… -o notes.age notes.txt   # a standard age file
  r2seal open -i key.txt notes.age              # plaintext to stdout
  r2seal open -i key.txt --range 0-99 notes.age # only the chunks that cover it
  r2seal inspect notes.age                      # the header, without keys

Keys can also come from a keyring (--keyring FILE or R2SEAL_KEYRING): see `r2seal key --help`.
Passphrases come from R2SEAL_PASSPHRASE or a terminal prompt.";

#[derive(Debug, Parser)]
#[command(name = "r2seal", version, about = ABOUT, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an age X25519 identity; print its recipient
    #[command(
        after_help = "Without -o, the identity goes to stdout and the recipient to stderr, as age-keygen does.\nAn existing file is never overwritten."
    )]
    Keygen {
        /// Write the identity to FILE (created 0600, never overwritten)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Protect the file with a passphrase (Argon2id)
        #[arg(long)]
        passphrase: bool,
    },

    /// Print the recipient (age1…) of each identity in a file
    Recipient {
        /// Identity file ("-" for stdin)
        #[arg(short, long = "identity", value_name = "FILE", required = true)]
        identities: Vec<PathBuf>,
    },

    /// Seal a file into an age v1 file (the file form)
    #[command(
        after_help = "Recipients come from -r/-R/-i; with none given, from the keyring's policy for --name.\nThe output is written atomically: on any error no output file is left behind."
    )]
    Seal {
        #[command(flatten)]
        recipients: RecipientArgs,
        /// Bind the object to NAME (its key in the bucket); opening then needs --name NAME
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Output file (default: stdout)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Input file (default: stdin)
        #[arg(value_name = "IN")]
        input: Option<PathBuf>,
    },

    /// Open a sealed file (age v1) and authenticate every byte
    #[command(
        after_help = "With -o, the plaintext is written to a temporary file and renamed into place only\nafter the whole object authenticated: no partial or unauthenticated file is left,\nalso on Ctrl-C or SIGTERM.\nTo stdout, each 64 KiB chunk is released once authenticated; a truncated or tampered\nobject ends with an error and a non-zero exit."
    )]
    Open {
        #[command(flatten)]
        identities: IdentityArgs,
        /// The name the object must be bound to
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Only bytes START-END (inclusive, as HTTP Range; also START- and -SUFFIX)
        #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
        range: Option<String>,
        /// Output file (default: stdout)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Input file (default: stdin)
        #[arg(value_name = "IN")]
        input: Option<PathBuf>,
    },

    /// Show a sealed file's header (stanzas, key ids, sizes) without any key
    Inspect {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Input file (default: stdin)
        #[arg(value_name = "IN")]
        input: Option<PathBuf>,
    },

    /// Seal a local file (or a directory, or - for stdin) into a bucket
    #[command(after_help = OBJECTS_HELP)]
    Put(PutArgs),

    /// Download and open objects; the local file appears only once it authenticated
    #[command(after_help = OBJECTS_HELP)]
    Get(GetArgs),

    /// Open an object to stdout (each 64 KiB chunk once it authenticated)
    #[command(after_help = OBJECTS_HELP)]
    Cat(CatArgs),

    /// List objects with their plaintext sizes
    #[command(after_help = OBJECTS_HELP)]
    Ls(LsArgs),

    /// Remove an object
    #[command(after_help = OBJECTS_HELP)]
    Rm(RmArgs),

    /// Show an object's plaintext size, headers and sealed metadata
    #[command(after_help = OBJECTS_HELP)]
    Head(HeadArgs),

    /// Copy objects, re-binding them to the new key (server-side within one bucket)
    #[command(after_help = OBJECTS_HELP)]
    Cp(CopyArgs),

    /// Move objects: copy (re-binding to the new key), then remove the source
    #[command(after_help = OBJECTS_HELP)]
    Mv(CopyArgs),

    /// Abort unfinished multipart uploads (left by a crash) under a prefix
    #[command(after_help = OBJECTS_HELP)]
    Cleanup(CleanupArgs),

    /// Seal every plaintext object under a bucket or prefix (in place, or into --to)
    #[command(after_help = MIGRATE_HELP)]
    Migrate(MigrateArgs),

    /// Read and authenticate every object; report plaintext, tampered and stale-key ones
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),

    /// Serve the S3 API locally, sealing writes and opening reads in front of a bucket
    #[command(after_help = GATEWAY_HELP)]
    Gateway(GatewayArgs),

    /// Rewrap (or re-key) every object under a bucket or prefix to its target recipients
    #[command(after_help = ROTATE_HELP)]
    Rotate(RotateArgs),

    /// Write a decrypted copy of a bucket or prefix into a local directory (incremental)
    #[command(after_help = EXPORT_HELP)]
    Export(ExportArgs),

    /// Seal a local directory tree into a bucket or prefix (incremental)
    #[command(after_help = EXPORT_HELP)]
    Import(ImportArgs),

    /// Manage the keyring: named keys, statuses, defaults, per-prefix policies
    #[command(subcommand)]
    Key(KeyCommand),

    /// The bucket descriptor: how every writer must write this bucket
    #[command(subcommand)]
    Bucket(BucketCommand),

    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct KeyringArg {
    /// Keyring file
    #[arg(long, env = "R2SEAL_KEYRING", value_name = "FILE")]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// Seal to RECIPIENT (age1…, or a symmetric key R2SEAL-SYM-KEY-1…, which is a secret:
    /// prefer -i FILE for it); repeatable
    #[arg(short, long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// Seal to every recipient in FILE; repeatable
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipient_files: Vec<PathBuf>,
    /// Seal to the identities in FILE (their recipients; symmetric keys too); repeatable
    #[arg(short, long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    #[command(flatten)]
    pub keyring: KeyringArg,
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Identity file (age, age passphrase-protected, or r2seal Argon2id-protected); repeatable
    #[arg(short, long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    #[command(flatten)]
    pub keyring: KeyringArg,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List keys, defaults and policies
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Add a key: generate a symmetric or age key, or import one
    #[command(
        after_help = "Exactly one of --sym, --age, --recipient, --import.\nThe keyring file is created (0600) if missing; --passphrase protects a new one."
    )]
    Add {
        /// Key name (unique in the keyring)
        name: String,
        /// Generate a symmetric key (seals and opens; for Workers and hot paths)
        #[arg(long, group = "source")]
        sym: bool,
        /// Generate an age X25519 identity
        #[arg(long, group = "source")]
        age: bool,
        /// Add a public age recipient only (seals, never opens: e.g. an offline recovery key)
        #[arg(long, group = "source", value_name = "AGE1…")]
        recipient: Option<String>,
        /// Import the first identity from FILE
        #[arg(long, group = "source", value_name = "FILE")]
        import: Option<PathBuf>,
        /// Mark as a recovery key (sealing without one warns)
        #[arg(long)]
        recovery: bool,
        /// Protect a newly created keyring with a passphrase (Argon2id)
        #[arg(long)]
        passphrase: bool,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Stop sealing to a key; it still opens old objects
    Retire {
        name: String,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Mark a key compromised: it opens only to re-key (cannot be undone)
    Revoke {
        name: String,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Set the keys objects are sealed to when no policy matches
    Default {
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Seal objects under PREFIX only to KEYS (e.g. archive/ to an offline recipient)
    #[command(
        after_help = "The longest matching prefix wins. `--remove` deletes the policy.\nExample: r2seal key policy archive/ recovery   # a Worker can write there, never read"
    )]
    Policy {
        prefix: String,
        #[arg(required_unless_present = "remove")]
        keys: Vec<String>,
        #[arg(long, conflicts_with = "keys")]
        remove: bool,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Encrypt object names under a symmetric key (AES-SIV per path segment)
    #[command(
        after_help = "Object commands then encrypt names transparently and `ls` decrypts them.\n`--off` stops encrypting names of new objects (existing encrypted names stay so).\nA Worker gets the same key as R2SEAL_NAMES_KEY: r2seal key export-secret KEY | wrangler secret put R2SEAL_NAMES_KEY\nRecord it in the bucket with `r2seal bucket init URL` so misconfigured writers are refused."
    )]
    Names {
        /// The symmetric key whose derived name key encrypts names
        #[arg(required_unless_present = "off")]
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        off: bool,
        #[command(flatten)]
        keyring: KeyringArg,
    },
    /// Print a key's secret for a Worker secret: `r2seal key export-secret main | wrangler secret put R2SEAL_KEY`
    ExportSecret {
        name: String,
        #[command(flatten)]
        keyring: KeyringArg,
    },
}

const OBJECTS_HELP: &str = "\
URLs: s3://BUCKET/KEY, r2://BUCKET/KEY (R2_ACCOUNT_ID or --endpoint), file://DIR/KEY.
For file://, the bucket is the nearest directory above KEY that already is one (it holds
.r2seal-meta/); when none is, the nearest existing directory becomes one.
Endpoint: --endpoint, else AWS_ENDPOINT_URL, else R2_ACCOUNT_ID. Credentials: the AWS
environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or AWS_PROFILE.
Objects are bound to their key: a sealed object copied under another key by other tools
does not open.";

/// Where the store is and how to print results.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else R2's from R2_ACCOUNT_ID)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Machine-readable output: one JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Local file, directory (with --recursive) or - for stdin
    #[arg(value_name = "LOCAL")]
    pub local: PathBuf,
    /// Destination: a key, or a prefix ending in / (the file name is appended)
    #[arg(value_name = "URL")]
    pub url: String,
    /// Upload every file under the LOCAL directory
    #[arg(long)]
    pub recursive: bool,
    /// Objects uploaded at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Readable Content-Type (default: application/octet-stream)
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Readable Cache-Control
    #[arg(long, value_name = "VALUE")]
    pub cache_control: Option<String>,
    /// Sealed Content-Encoding of the plaintext
    #[arg(long, value_name = "VALUE")]
    pub content_encoding: Option<String>,
    /// Sealed Content-Disposition
    #[arg(long, value_name = "VALUE")]
    pub content_disposition: Option<String>,
    /// Sealed user metadata KEY=VALUE; repeatable
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Create only: fail if the object exists (If-None-Match: *; puts of one request)
    #[arg(long)]
    pub no_clobber: bool,
    /// Replace only this version of the object (If-Match; puts of one request)
    #[arg(long, value_name = "ETAG")]
    pub if_match: Option<String>,
    /// Multipart part size in MiB (at least 5)
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub part_size: u64,
    /// Files larger than this (MiB) go up in parts; smaller ones in one streamed
    /// request (stdin: up to one part)
    #[arg(long, value_name = "MIB", default_value_t = 200)]
    pub multipart_threshold: u64,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub identities: IdentityArgs,
    #[arg(value_name = "URL")]
    pub url: String,
    /// Local file or directory (default: the key's file name / the current directory); - for stdout
    #[arg(value_name = "LOCAL")]
    pub local: Option<PathBuf>,
    /// Download every object under the prefix into the LOCAL directory
    #[arg(long)]
    pub recursive: bool,
    /// Objects downloaded at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Only plaintext bytes START-END (inclusive; also START- and -SUFFIX)
    #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
    pub range: Option<String>,
    /// Return plaintext (unsealed) objects as they are instead of failing
    #[arg(long)]
    pub allow_plaintext: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub identities: IdentityArgs,
    #[arg(value_name = "URL")]
    pub url: String,
    /// Only plaintext bytes START-END (inclusive; also START- and -SUFFIX)
    #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
    pub range: Option<String>,
    /// Return a plaintext (unsealed) object as it is instead of failing
    #[arg(long)]
    pub allow_plaintext: bool,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else R2's from R2_ACCOUNT_ID)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Bucket, prefix or key
    #[arg(value_name = "URL")]
    pub url: String,
    /// Every key under the prefix, not just one level
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Size (plaintext), date (UTC) and the stored ETag, as the listing gives them
    #[arg(long, short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// For the name key, when names are encrypted
    #[command(flatten)]
    pub keyring: KeyringArg,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// For the name key, when names are encrypted
    #[command(flatten)]
    pub keyring: KeyringArg,
}

#[derive(Debug, Args)]
pub struct HeadArgs {
    #[command(flatten)]
    pub identities: IdentityArgs,
    #[arg(value_name = "URL")]
    pub url: String,
    /// Describe a plaintext (unsealed) object instead of failing
    #[arg(long)]
    pub allow_plaintext: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Recipients for the destination (default: the keyring's policy for its key);
    /// -i identities also open the source
    #[command(flatten)]
    pub recipients: RecipientArgs,
    #[arg(value_name = "SRC")]
    pub src: String,
    /// A key, or a prefix ending in / (the source's file name is appended)
    #[arg(value_name = "DST")]
    pub dst: String,
    /// Every object under the SRC prefix
    #[arg(long)]
    pub recursive: bool,
    /// Objects copied at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Copy plaintext (unsealed) objects as they are instead of failing
    #[arg(long)]
    pub allow_plaintext: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Bucket or prefix
    #[arg(value_name = "URL")]
    pub url: String,
    /// Only uploads started at least this long ago (e.g. 30m, 24h, 7d; 0 for all)
    #[arg(long, value_name = "AGE", default_value = "24h")]
    pub older_than: String,
    /// List what would be aborted, abort nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// For the name key, when names are encrypted
    #[command(flatten)]
    pub keyring: KeyringArg,
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// Write the bucket descriptor (.r2seal/descriptor) from this keyring
    #[command(
        after_help = "The descriptor records the form, the name key id and the recipients' key ids per\nprefix, with a MAC under each symmetric key of the keyring. Every writer compares it with\nits own configuration before its first write and refuses on a difference. It never adds\ntrust: nobody adopts keys or recipients from it. See SECURITY.md §3.11."
    )]
    Init {
        /// Bucket (or store root): s3://BUCKET, r2://BUCKET, file://DIR
        #[arg(value_name = "URL")]
        url: String,
        /// Replace an existing descriptor
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        keyring: KeyringArg,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print the bucket descriptor, whether it authenticates, and whether this keyring matches it
    #[command(
        after_help = "Exit status: 0 when this keyring matches the descriptor, 1 when it differs (its writes\nwould be refused) or on an error, so `r2seal bucket show URL` serves as a check."
    )]
    Show {
        #[arg(value_name = "URL")]
        url: String,
        #[command(flatten)]
        keyring: KeyringArg,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Flags every bucket job shares (migrate, verify, rotate, export, import).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Objects processed at once
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub jobs: usize,
    /// Only shard K of N (1-based), split by a stable hash of each key: run N machines with 1/N … N/N
    #[arg(long, value_name = "K/N")]
    pub shard: Option<r2seal::jobs::Shard>,
    /// Report what would be done; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write a JSON report (counts and every object's outcome) to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the summary
    #[arg(long)]
    pub json: bool,
    /// No progress line, and no summary unless something was left undone
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Further attempts per object after a transient failure or a conflict
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else R2's from R2_ACCOUNT_ID)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

const MIGRATE_HELP: &str = "\
In place, each object is rewritten only if it still is the version read (If-Match on its
ETag): an object changed meanwhile is retried, then reported as a conflict, never
clobbered. Already sealed objects are skipped, so a rerun finishes an interrupted run and
is otherwise a no-op. Content-Type and Cache-Control stay readable; user metadata
(rclone's mtime included) is sealed. --to writes into another bucket or prefix and leaves
the source untouched; --reverse unseals back to plaintext (the way out).
Exit status: non-zero if any object was left undone (conflicts, failures).
Examples:
  r2seal migrate --keyring ring.toml --dry-run r2://agent-bucket/
  r2seal migrate --keyring ring.toml --verify --report migrate.json r2://agent-bucket/
  r2seal migrate -r age1… --to r2://sealed-bucket/ r2://plain-bucket/
  r2seal migrate --keyring ring.toml --shard 2/4 r2://agent-bucket/   # machine 2 of 4
  r2seal migrate --keyring ring.toml --reverse r2://agent-bucket/";

const VERIFY_HELP: &str = "\
Every object is read in full and authenticated (streamed; nothing is written). Problems:
plaintext objects, objects that do not open (tampered, moved, or sealed to keys not held)
and, with a keyring, objects that only retired or revoked keys open.
Exit status: non-zero on any problem.";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Recipients to seal to (default: the keyring's policy per key); -i identities and
    /// the keyring also open objects for --reverse and --verify
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Bucket or prefix to migrate (s3://BUCKET/PREFIX, r2://…, file://…)
    #[arg(value_name = "URL")]
    pub url: String,
    /// Write into this bucket or prefix instead, leaving the source untouched; a rerun
    /// seals sources again whose copy differs (size, MD5: needs an identity)
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Unseal sealed objects back to plaintext
    #[arg(long)]
    pub reverse: bool,
    /// Read each written object back and authenticate it before counting it done
    #[arg(long)]
    pub verify: bool,
    /// Store each object under its encrypted name (the keyring's name key or
    /// R2SEAL_NAMES_KEY), read it back, then delete the plaintext-named one; objects
    /// already sealed under plaintext names are moved (server-side copy, checked)
    #[arg(long, conflicts_with = "reverse")]
    pub encrypt_names: bool,
    /// Multipart part size in MiB (at least 5)
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub part_size: u64,
    /// Objects larger than this (MiB) are written in parts; smaller ones in one
    /// streamed request (sealed, or with --reverse unsealed, as they are read)
    #[arg(long, value_name = "MIB", default_value_t = 200)]
    pub multipart_threshold: u64,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub identities: IdentityArgs,
    /// Bucket or prefix to verify
    #[arg(value_name = "URL")]
    pub url: String,
    /// Verify a uniform random sample of N objects only
    #[arg(long, value_name = "N")]
    pub sample: Option<u64>,
    #[command(flatten)]
    pub job: JobArgs,
}

const GATEWAY_HELP: &str = "\
Clients sign with R2SEAL_GATEWAY_ACCESS_KEY_ID / R2SEAL_GATEWAY_SECRET_ACCESS_KEY (SigV4).
Bucket names pass through to the upstream; its credentials come from the AWS environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE), as for the other commands.
Plaintext objects already in the bucket stay readable; every write is sealed.
Stderr gets one line per refused request (403) and per failure only the operator can fix
(upstream unreachable or refusing, an object that does not open).
Example (rclone): endpoint = http://127.0.0.1:8333, provider = Other, list_version = 2.";

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Seal to these recipients (default: the keyring's policy per key); the identities
    /// (-i, or the keyring's) open what clients read
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Address to listen on (port 0: any free port, printed on stderr)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8333")]
    pub listen: String,
    /// Upstream S3 endpoint URL (default: AWS_ENDPOINT_URL, else R2's from R2_ACCOUNT_ID)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Listen on a non-loopback address (anyone who can reach it and holds the gateway
    /// key pair reads plaintext: put TLS in front)
    #[arg(long)]
    pub allow_public: bool,
    /// On Ctrl-C or SIGTERM: how long requests in flight may take to finish before they
    /// are cut (a cut request commits nothing)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Serve objects stored without an r2seal envelope as they are stored, while a bucket
    /// is being migrated (writes are sealed either way). Without it, reading one is
    /// refused: whoever can write the bucket could put plaintext in a sealed object's place
    #[arg(long)]
    pub allow_plaintext: bool,
}

const ROTATE_HELP: &str = "\
Target set, per object: the keyring's policy for its key (longest prefix, else the
defaults) or the -r/-R/-i recipients, minus each --remove, plus each --add. It is printed
before the run. An object already sealed to its target set is skipped: a rerun is a
no-op, an interrupted run resumes.
Without a re-key nothing but headers moves: each object is copied onto itself
server-side with a new envelope (multipart copy over 5 GiB), conditional on its ETag.
A re-key (fresh file key, body re-encrypted, streamed) happens with --rekey-all for
every object (a data key may have leaked: every object last written before the run
started, by the store's last-modified time; an interrupted run is finished with
--rekey-before and the start time it printed, else it starts over), with --rekey for
every object whose file key was ever wrapped to a key outside its set, and by default
for every object whose file key was ever wrapped to a revoked key; --no-rekey never
re-keys (a rewrap does not protect against a copy of the old envelope: r2seal warns).
After a complete run over a whole bucket, each removed key that was active becomes
retired in the keyring (defaults and policies are not edited). SECURITY.md §4.5.
Exit status: non-zero if any object was left undone (conflicts, failures).
Examples:
  r2seal rotate --dry-run r2://agent-bucket/
  r2seal rotate --add laptop r2://agent-bucket/
  r2seal rotate --remove agent r2://agent-bucket/        # agent revoked: re-keys
  r2seal rotate --rekey --jobs 32 r2://agent-bucket/sessions/
  r2seal rotate --rekey-all r2://agent-bucket/        # a data key may have leaked";

const EXPORT_HELP: &str = "\
export: one file per object under DIR (the key tree below the prefix), each written to a
temp file and renamed only after its object authenticated (mode 0600); mtime from
rclone's mtime metadata. DIR/.r2seal-export.json records what was written: objects with
an unchanged ETag are skipped. Keys that would escape DIR (.., a leading /, //) are
refused one by one. Files it wrote whose objects are gone are listed in the summary
(after a complete walk of the one bucket and prefix exported there); --delete removes
them, and never any other file.
import: every file under DIR, sealed to the keyring's policy (or -r/-R/-i), its mtime
stored as rclone does; files whose object has the same size and mtime are skipped.
Examples:
  r2seal export r2://agent-bucket/ ./backup
  r2seal import ./backup r2://agent-bucket-restored/";

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Recipients before changes (default: the keyring's policy per key); -i identities
    /// and the keyring (revoked keys included) open the objects
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Bucket or prefix to rotate
    #[arg(value_name = "URL")]
    pub url: String,
    /// Add a key to every object: a keyring key name or id, or an age1… recipient; repeatable
    #[arg(long, value_name = "KEY")]
    pub add: Vec<String>,
    /// Remove a key from every object: a keyring key name or id, an age1… recipient, or a key id; repeatable
    #[arg(long, value_name = "KEY")]
    pub remove: Vec<String>,
    /// Re-encrypt under fresh file keys every object whose file key was ever wrapped to a key outside its set
    #[arg(long, conflicts_with_all = ["no_rekey", "rekey_all", "rekey_before"])]
    pub rekey: bool,
    /// Re-encrypt every object under fresh file keys (a data key may have leaked): every
    /// object last written before this run started, so a rerun from scratch starts over
    #[arg(long, conflicts_with_all = ["no_rekey", "rekey_before"])]
    pub rekey_all: bool,
    /// --rekey-all for objects last written before TIME (RFC 3339), e.g. the start time an
    /// interrupted --rekey-all printed: what it re-keyed is not re-keyed again
    #[arg(long, value_name = "TIME", conflicts_with = "no_rekey")]
    pub rekey_before: Option<String>,
    /// Never re-key, even when removing a revoked key (a rewrap only)
    #[arg(long)]
    pub no_rekey: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub identities: IdentityArgs,
    /// Bucket or prefix to export
    #[arg(value_name = "URL")]
    pub url: String,
    /// Local directory (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Delete files an earlier export wrote whose objects are gone from the bucket (only
    /// files its manifest lists, and only if unchanged in size)
    #[arg(long)]
    pub delete: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Local directory to seal
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Destination bucket or prefix
    #[arg(value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub job: JobArgs,
}
