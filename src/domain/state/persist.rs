//! How the projections' protobuf-typed fields (credential digests, institution customers,
//! enumerations from the event format) are written in a snapshot of the state: as the
//! protobuf bytes the ledger already stores them in, and enumerations as their numbers. Used
//! through `#[serde(with = ...)]` on the fields; the snapshot's format is `ledger/snapshot.rs`'s.

/// One protobuf message, as its encoding.
pub mod message {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: prost::Message, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&value.encode_to_vec())
    }

    pub fn deserialize<'de, T: prost::Message + Default, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        T::decode(bytes.as_slice()).map_err(D::Error::custom)
    }
}

/// A list of protobuf messages, each as its encoding.
pub mod messages {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: prost::Message, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        let encoded: Vec<Vec<u8>> = values.iter().map(prost::Message::encode_to_vec).collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, T: prost::Message + Default, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let encoded = Vec::<Vec<u8>>::deserialize(d)?;
        encoded.iter().map(|bytes| T::decode(bytes.as_slice()).map_err(D::Error::custom)).collect()
    }
}

/// A protobuf enumeration, as its number; a number this build does not know is refused.
pub mod enumeration {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Copy + Into<i32>, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        (*value).into().serialize(s)
    }

    pub fn deserialize<'de, T: TryFrom<i32>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let number = i32::deserialize(d)?;
        T::try_from(number).map_err(|_| D::Error::custom(format!("unknown enumeration value {number}")))
    }
}
