/* The mqtt driver: one device is one connection to an MQTT broker.
 *
 * South: tags bound to the device read topics (JSON field paths, msgpack
 * maps, plain text, or another doppel's data topics for fleets).
 * North (publish = true): the plant's journal is published through a
 * durable cursor under <prefix>/<twin>/... (store-and-forward, at least
 * once, in order, with the journal sequence number in every item).
 * Commands (commands = { client = { "twin.tag", ... } }): requests on
 * <prefix>/<twin>/cmd/<client> pass the guard; the outcome goes to
 * <prefix>/<twin>/reply/<client>. See docs/mqtt.md. */
#ifndef DP_DRIVER_MQTT_H
#define DP_DRIVER_MQTT_H

#include "../driver.h"

extern const dp_driver_t dp_mqtt_driver;

/* Writes the Markdown tables of the device and point settings (docs). */
void dp_mqtt_settings_doc(FILE *out);

#endif
