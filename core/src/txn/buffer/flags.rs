//! Key flags: what the transaction knows about each buffered key besides its value.
//!
//! The set of flags and the way each operation changes them follow client-go's
//! `kv/keyflags.go`. Flags are changed only through [`FlagsOp`]s, never bit by bit, because
//! several operations touch more than one flag at once (presuming a key absent also asks for
//! an existence check; recording a locked key's existence ends a postponed constraint check).

use std::fmt;

/// The flags of one buffered key: a set of bits, changed with [`FlagsOp`]s.
///
/// Two kinds of flags matter to the buffer itself. **Persistent** flags
/// ([`KeyFlags::persistent`]: key locked, locked value exists, constraint check postponed to
/// prewrite, locked in share mode) record facts about locks already taken on the server, so
/// they survive when a staging level that wrote the key is cleaned up; every other flag is
/// dropped with the value the cleanup discards. Setting a persistent flag also marks the
/// buffer dirty, since the transaction then holds something it must commit or roll back.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeyFlags(u16);

impl KeyFlags {
    /// The key is presumed absent: its existence is checked lazily, at prewrite.
    const PRESUME_KEY_NOT_EXISTS: u16 = 1 << 0;
    /// A pessimistic lock on the key is held.
    const KEY_LOCKED: u16 = 1 << 1;
    /// The key must be locked (pessimistic transactions).
    const NEED_LOCKED: u16 = 1 << 2;
    /// When the key was locked, it had a value.
    const KEY_LOCKED_VAL_EXIST: u16 = 1 << 3;
    /// The key's existence must be checked when it is locked.
    const NEED_CHECK_EXISTS: u16 = 1 << 4;
    /// The key is prewritten but never committed (it only carries a lock).
    const PREWRITE_ONLY: u16 = 1 << 5;
    /// The key takes no part in two-phase commit.
    const IGNORED_IN_2PC: u16 = 1 << 6;
    /// Reads inside the transaction may see the key.
    const READABLE: u16 = 1 << 7;
    /// The key was written by an insert.
    const NEWLY_INSERTED: u16 = 1 << 8;
    /// The key is asserted to exist.
    const ASSERT_EXIST: u16 = 1 << 9;
    /// The key is asserted not to exist.
    const ASSERT_NOT_EXIST: u16 = 1 << 10;
    /// The conflict check of the key is postponed to prewrite (pessimistic transactions).
    const NEED_CONSTRAINT_CHECK_IN_PREWRITE: u16 = 1 << 11;
    /// A presume-not-exists flag set by an earlier statement, kept for statement retry.
    const PREVIOUS_PRESUME_KEY_NOT_EXISTS: u16 = 1 << 12;
    /// The pessimistic lock held is a shared one.
    const KEY_LOCKED_IN_SHARE_MODE: u16 = 1 << 13;

    /// The flags kept when a staging level that added the key's value is cleaned up.
    const PERSISTENT: u16 = Self::KEY_LOCKED
        | Self::KEY_LOCKED_VAL_EXIST
        | Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE
        | Self::KEY_LOCKED_IN_SHARE_MODE;

    /// Every flag's bit and name, for `Debug`.
    const NAMES: [(u16, &'static str); 14] = [
        (Self::PRESUME_KEY_NOT_EXISTS, "PresumeKeyNotExists"),
        (Self::KEY_LOCKED, "KeyLocked"),
        (Self::NEED_LOCKED, "NeedLocked"),
        (Self::KEY_LOCKED_VAL_EXIST, "KeyLockedValExist"),
        (Self::NEED_CHECK_EXISTS, "NeedCheckExists"),
        (Self::PREWRITE_ONLY, "PrewriteOnly"),
        (Self::IGNORED_IN_2PC, "IgnoredIn2PC"),
        (Self::READABLE, "Readable"),
        (Self::NEWLY_INSERTED, "NewlyInserted"),
        (Self::ASSERT_EXIST, "AssertExist"),
        (Self::ASSERT_NOT_EXIST, "AssertNotExist"),
        (
            Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE,
            "NeedConstraintCheckInPrewrite",
        ),
        (
            Self::PREVIOUS_PRESUME_KEY_NOT_EXISTS,
            "PreviousPresumeKeyNotExists",
        ),
        (Self::KEY_LOCKED_IN_SHARE_MODE, "KeyLockedInShareMode"),
    ];

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw bits, for logs and traces. Bit positions are those of client-go's
    /// `KeyFlags`, so values compare across the two clients.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The persistent flags among these (see the type's documentation): what a cleanup
    /// keeps when it discards the key's value.
    pub const fn persistent(self) -> Self {
        Self(self.0 & Self::PERSISTENT)
    }

    /// These flags changed by `ops`, applied in order.
    #[must_use]
    pub fn apply(self, ops: &[FlagsOp]) -> Self {
        ops.iter().fold(self, |flags, op| flags.apply_one(*op))
    }

    /// These flags changed by one operation.
    #[must_use]
    pub const fn apply_one(self, op: FlagsOp) -> Self {
        let bits = self.0;
        Self(match op {
            FlagsOp::SetPresumeKeyNotExists => {
                bits | Self::PRESUME_KEY_NOT_EXISTS | Self::NEED_CHECK_EXISTS
            }
            FlagsOp::DelPresumeKeyNotExists => {
                bits & !(Self::PRESUME_KEY_NOT_EXISTS | Self::NEED_CHECK_EXISTS)
            }
            FlagsOp::SetKeyLocked => bits | Self::KEY_LOCKED,
            FlagsOp::DelKeyLocked => bits & !Self::KEY_LOCKED,
            FlagsOp::SetNeedLocked => bits | Self::NEED_LOCKED,
            FlagsOp::DelNeedLocked => bits & !Self::NEED_LOCKED,
            // Knowing the locked value's existence settles the postponed check.
            FlagsOp::SetKeyLockedValueExists => {
                (bits | Self::KEY_LOCKED_VAL_EXIST) & !Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE
            }
            FlagsOp::SetKeyLockedValueNotExists => {
                bits & !(Self::KEY_LOCKED_VAL_EXIST | Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE)
            }
            FlagsOp::DelNeedCheckExists => bits & !Self::NEED_CHECK_EXISTS,
            FlagsOp::SetPrewriteOnly => bits | Self::PREWRITE_ONLY,
            FlagsOp::SetIgnoredIn2pc => bits | Self::IGNORED_IN_2PC,
            FlagsOp::SetReadable => bits | Self::READABLE,
            FlagsOp::SetNewlyInserted => bits | Self::NEWLY_INSERTED,
            FlagsOp::SetAssertExist => (bits & !Self::ASSERT_NOT_EXIST) | Self::ASSERT_EXIST,
            FlagsOp::SetAssertNotExist => (bits & !Self::ASSERT_EXIST) | Self::ASSERT_NOT_EXIST,
            FlagsOp::SetAssertUnknown => bits | Self::ASSERT_EXIST | Self::ASSERT_NOT_EXIST,
            FlagsOp::SetAssertNone => bits & !(Self::ASSERT_EXIST | Self::ASSERT_NOT_EXIST),
            FlagsOp::SetNeedConstraintCheckInPrewrite => {
                bits | Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE
            }
            FlagsOp::DelNeedConstraintCheckInPrewrite => {
                bits & !Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE
            }
            FlagsOp::SetPreviousPresumeKeyNotExists => bits | Self::PREVIOUS_PRESUME_KEY_NOT_EXISTS,
            FlagsOp::SetKeyLockedInShareMode => bits | Self::KEY_LOCKED_IN_SHARE_MODE,
            FlagsOp::SetKeyLockedInExclusiveMode => bits & !Self::KEY_LOCKED_IN_SHARE_MODE,
        })
    }

    /// Whether the key is asserted to exist (and only that).
    pub const fn has_assert_exist(self) -> bool {
        self.0 & Self::ASSERT_EXIST != 0 && self.0 & Self::ASSERT_NOT_EXIST == 0
    }

    /// Whether the key is asserted not to exist (and only that).
    pub const fn has_assert_not_exist(self) -> bool {
        self.0 & Self::ASSERT_NOT_EXIST != 0 && self.0 & Self::ASSERT_EXIST == 0
    }

    /// Whether no assertion can be made on the key (both assertion bits set).
    pub const fn has_assert_unknown(self) -> bool {
        self.0 & Self::ASSERT_EXIST != 0 && self.0 & Self::ASSERT_NOT_EXIST != 0
    }

    /// Whether any assertion (exists, not exists or unknown) is set; once set, it is not
    /// expected to change within the transaction.
    pub const fn has_assertion_flags(self) -> bool {
        self.0 & (Self::ASSERT_EXIST | Self::ASSERT_NOT_EXIST) != 0
    }

    /// Whether the key is presumed absent, by this statement or an earlier one.
    pub const fn has_presume_key_not_exists(self) -> bool {
        self.0 & (Self::PRESUME_KEY_NOT_EXISTS | Self::PREVIOUS_PRESUME_KEY_NOT_EXISTS) != 0
    }

    /// Whether a pessimistic lock on the key is held.
    pub const fn has_locked(self) -> bool {
        self.0 & Self::KEY_LOCKED != 0
    }

    /// Whether the pessimistic lock held is a shared one.
    pub const fn has_locked_in_share_mode(self) -> bool {
        self.0 & Self::KEY_LOCKED_IN_SHARE_MODE != 0
    }

    /// Whether the key must be locked.
    pub const fn has_need_locked(self) -> bool {
        self.0 & Self::NEED_LOCKED != 0
    }

    /// Whether the key had a value when it was locked.
    pub const fn has_locked_value_exists(self) -> bool {
        self.0 & Self::KEY_LOCKED_VAL_EXIST != 0
    }

    /// Whether the key's existence must be checked when it is locked.
    pub const fn has_need_check_exists(self) -> bool {
        self.0 & Self::NEED_CHECK_EXISTS != 0
    }

    /// Whether the key is prewritten only (never committed).
    pub const fn has_prewrite_only(self) -> bool {
        self.0 & Self::PREWRITE_ONLY != 0
    }

    /// Whether the key is left out of two-phase commit.
    pub const fn has_ignored_in_2pc(self) -> bool {
        self.0 & Self::IGNORED_IN_2PC != 0
    }

    /// Whether reads inside the transaction may see the key.
    pub const fn has_readable(self) -> bool {
        self.0 & Self::READABLE != 0
    }

    /// Whether the key's conflict check is postponed to prewrite.
    pub const fn has_need_constraint_check_in_prewrite(self) -> bool {
        self.0 & Self::NEED_CONSTRAINT_CHECK_IN_PREWRITE != 0
    }

    /// Whether the key was written by an insert.
    pub const fn has_newly_inserted(self) -> bool {
        self.0 & Self::NEWLY_INSERTED != 0
    }
}

impl fmt::Debug for KeyFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// One change to a key's flags (client-go's `FlagsOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlagsOp {
    /// Presume the key absent, checked lazily; also asks for an existence check.
    SetPresumeKeyNotExists,
    /// Undo [`FlagsOp::SetPresumeKeyNotExists`] (both flags it set).
    DelPresumeKeyNotExists,
    /// The key's pessimistic lock is held.
    SetKeyLocked,
    /// The key's pessimistic lock is no longer held.
    DelKeyLocked,
    /// The key must be locked.
    SetNeedLocked,
    /// The key need not be locked.
    DelNeedLocked,
    /// The key had a value when locked; settles a postponed constraint check.
    SetKeyLockedValueExists,
    /// The key had no value when locked; settles a postponed constraint check.
    SetKeyLockedValueNotExists,
    /// The key's existence need not be checked when locking it.
    DelNeedCheckExists,
    /// The key is prewritten but not committed.
    SetPrewriteOnly,
    /// The key is left out of two-phase commit.
    SetIgnoredIn2pc,
    /// Reads inside the transaction may see the key.
    SetReadable,
    /// The key was written by an insert.
    SetNewlyInserted,
    /// Assert that the key exists (replaces an assertion that it does not).
    SetAssertExist,
    /// Assert that the key does not exist (replaces an assertion that it does).
    SetAssertNotExist,
    /// Mark the key as one on which no assertion can be made.
    SetAssertUnknown,
    /// Clear the key's assertion.
    SetAssertNone,
    /// Postpone the key's conflict check to prewrite.
    SetNeedConstraintCheckInPrewrite,
    /// Undo [`FlagsOp::SetNeedConstraintCheckInPrewrite`]. Every write of a value does this
    /// first, unless the write sets the flag again.
    DelNeedConstraintCheckInPrewrite,
    /// Keep a presume-not-exists from an earlier statement.
    SetPreviousPresumeKeyNotExists,
    /// The lock held is a shared one.
    SetKeyLockedInShareMode,
    /// The lock held is an exclusive one.
    SetKeyLockedInExclusiveMode,
}

impl FlagsOp {
    /// Every operation, for tests and exhaustive checks.
    pub const ALL: [Self; 22] = [
        Self::SetPresumeKeyNotExists,
        Self::DelPresumeKeyNotExists,
        Self::SetKeyLocked,
        Self::DelKeyLocked,
        Self::SetNeedLocked,
        Self::DelNeedLocked,
        Self::SetKeyLockedValueExists,
        Self::SetKeyLockedValueNotExists,
        Self::DelNeedCheckExists,
        Self::SetPrewriteOnly,
        Self::SetIgnoredIn2pc,
        Self::SetReadable,
        Self::SetNewlyInserted,
        Self::SetAssertExist,
        Self::SetAssertNotExist,
        Self::SetAssertUnknown,
        Self::SetAssertNone,
        Self::SetNeedConstraintCheckInPrewrite,
        Self::DelNeedConstraintCheckInPrewrite,
        Self::SetPreviousPresumeKeyNotExists,
        Self::SetKeyLockedInShareMode,
        Self::SetKeyLockedInExclusiveMode,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(ops: &[FlagsOp]) -> KeyFlags {
        KeyFlags::empty().apply(ops)
    }

    #[test]
    fn presume_not_exists_sets_and_clears_the_existence_check() {
        let flags = with(&[FlagsOp::SetPresumeKeyNotExists]);
        assert!(flags.has_presume_key_not_exists());
        assert!(flags.has_need_check_exists());
        let flags = flags.apply_one(FlagsOp::DelPresumeKeyNotExists);
        assert!(!flags.has_presume_key_not_exists());
        assert!(!flags.has_need_check_exists());
        assert!(flags.is_empty());
    }

    #[test]
    fn previous_presume_counts_as_presume_and_survives_its_removal() {
        let flags = with(&[FlagsOp::SetPreviousPresumeKeyNotExists]);
        assert!(flags.has_presume_key_not_exists());
        let flags = flags.apply_one(FlagsOp::DelPresumeKeyNotExists);
        assert!(flags.has_presume_key_not_exists());
    }

    #[test]
    fn assertions_have_four_states() {
        let none = KeyFlags::empty();
        assert!(!none.has_assertion_flags());
        let exist = none.apply_one(FlagsOp::SetAssertExist);
        assert!(exist.has_assert_exist() && !exist.has_assert_not_exist());
        assert!(!exist.has_assert_unknown() && exist.has_assertion_flags());
        let not_exist = exist.apply_one(FlagsOp::SetAssertNotExist);
        assert!(not_exist.has_assert_not_exist() && !not_exist.has_assert_exist());
        let unknown = not_exist.apply_one(FlagsOp::SetAssertUnknown);
        assert!(unknown.has_assert_unknown());
        assert!(!unknown.has_assert_exist() && !unknown.has_assert_not_exist());
        assert!(unknown.has_assertion_flags());
        assert!(
            !unknown
                .apply_one(FlagsOp::SetAssertNone)
                .has_assertion_flags()
        );
    }

    #[test]
    fn locked_value_existence_settles_the_postponed_check() {
        let flags = with(&[FlagsOp::SetNeedConstraintCheckInPrewrite]);
        assert!(flags.has_need_constraint_check_in_prewrite());
        let exists = flags.apply_one(FlagsOp::SetKeyLockedValueExists);
        assert!(exists.has_locked_value_exists());
        assert!(!exists.has_need_constraint_check_in_prewrite());
        let absent = exists
            .apply_one(FlagsOp::SetNeedConstraintCheckInPrewrite)
            .apply_one(FlagsOp::SetKeyLockedValueNotExists);
        assert!(!absent.has_locked_value_exists());
        assert!(!absent.has_need_constraint_check_in_prewrite());
    }

    #[test]
    fn lock_mode_flags() {
        let flags = with(&[FlagsOp::SetKeyLocked, FlagsOp::SetKeyLockedInShareMode]);
        assert!(flags.has_locked() && flags.has_locked_in_share_mode());
        let flags = flags.apply_one(FlagsOp::SetKeyLockedInExclusiveMode);
        assert!(flags.has_locked() && !flags.has_locked_in_share_mode());
        assert!(!flags.apply_one(FlagsOp::DelKeyLocked).has_locked());
    }

    #[test]
    fn persistent_flags_are_the_lock_facts() {
        let all = KeyFlags::empty().apply(&[
            FlagsOp::SetPresumeKeyNotExists,
            FlagsOp::SetKeyLocked,
            FlagsOp::SetNeedLocked,
            FlagsOp::SetKeyLockedValueExists,
            FlagsOp::SetPrewriteOnly,
            FlagsOp::SetIgnoredIn2pc,
            FlagsOp::SetReadable,
            FlagsOp::SetNewlyInserted,
            FlagsOp::SetAssertUnknown,
            FlagsOp::SetNeedConstraintCheckInPrewrite,
            FlagsOp::SetPreviousPresumeKeyNotExists,
            FlagsOp::SetKeyLockedInShareMode,
        ]);
        let kept = all.persistent();
        assert!(kept.has_locked());
        assert!(kept.has_locked_value_exists());
        assert!(kept.has_need_constraint_check_in_prewrite());
        assert!(kept.has_locked_in_share_mode());
        assert!(!kept.has_presume_key_not_exists());
        assert!(!kept.has_need_locked());
        assert!(!kept.has_need_check_exists());
        assert!(!kept.has_prewrite_only());
        assert!(!kept.has_ignored_in_2pc());
        assert!(!kept.has_readable());
        assert!(!kept.has_newly_inserted());
        assert!(!kept.has_assertion_flags());
        assert_eq!(kept.persistent(), kept);
    }

    #[test]
    fn each_set_op_sets_what_its_predicate_reads() {
        type Predicate = fn(KeyFlags) -> bool;
        let cases: [(FlagsOp, Predicate); 9] = [
            (FlagsOp::SetNeedLocked, KeyFlags::has_need_locked),
            (FlagsOp::SetPrewriteOnly, KeyFlags::has_prewrite_only),
            (FlagsOp::SetIgnoredIn2pc, KeyFlags::has_ignored_in_2pc),
            (FlagsOp::SetReadable, KeyFlags::has_readable),
            (FlagsOp::SetNewlyInserted, KeyFlags::has_newly_inserted),
            (FlagsOp::SetKeyLocked, KeyFlags::has_locked),
            (
                FlagsOp::SetKeyLockedValueExists,
                KeyFlags::has_locked_value_exists,
            ),
            (
                FlagsOp::SetNeedConstraintCheckInPrewrite,
                KeyFlags::has_need_constraint_check_in_prewrite,
            ),
            (
                FlagsOp::SetKeyLockedInShareMode,
                KeyFlags::has_locked_in_share_mode,
            ),
        ];
        for (op, predicate) in cases {
            assert!(!predicate(KeyFlags::empty()), "{op:?}");
            assert!(predicate(with(&[op])), "{op:?}");
        }
        assert!(!with(&[FlagsOp::SetNeedLocked, FlagsOp::DelNeedLocked]).has_need_locked());
        assert!(
            !with(&[FlagsOp::SetPresumeKeyNotExists, FlagsOp::DelNeedCheckExists])
                .has_need_check_exists()
        );
    }

    #[test]
    fn bits_match_client_go_positions() {
        assert_eq!(with(&[FlagsOp::SetPresumeKeyNotExists]).bits(), 0b1_0001);
        assert_eq!(with(&[FlagsOp::SetKeyLocked]).bits(), 1 << 1);
        assert_eq!(with(&[FlagsOp::SetKeyLockedInShareMode]).bits(), 1 << 13);
        assert_eq!(with(&[FlagsOp::SetAssertUnknown]).bits(), 0b110 << 8);
    }

    #[test]
    fn debug_names_the_flags() {
        let flags = with(&[FlagsOp::SetKeyLocked, FlagsOp::SetReadable]);
        assert_eq!(format!("{flags:?}"), "{KeyLocked, Readable}");
        assert_eq!(format!("{:?}", KeyFlags::empty()), "{}");
    }
}
