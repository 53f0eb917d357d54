#include "driver.h"

#include <string.h>

#include "modbus/modbus.h"
#include "mqtt/mqtt.h"
#include "sim/sim.h"

/* Every driver built into doppel, in the order they are listed and
 * documented. A new driver adds its vtable here. */
static const dp_driver_t *const drivers[] = {
    &dp_sim_driver, &dp_modbus_driver, &dp_modbus_server_driver, &dp_mqtt_driver, NULL,
};

const dp_driver_t *dp_driver_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; drivers[i] != NULL; i++) {
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    }
    return NULL;
}

const dp_driver_t *const *dp_drivers(void)
{
    return drivers;
}
