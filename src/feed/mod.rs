//! Triggers registered at run time through OpenWhisk's feed protocol
//! (`wsk trigger create T --feed mqtt/mqtt_feed`), SPEC section 8.

mod sealed;
