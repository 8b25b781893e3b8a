// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * efd_mask: mask fds for stock kernels, as a loadable module.
 *
 * Every open(2) of the misc device /dev/efd_mask (mode 0666) returns a new
 * "mask fd" that behaves exactly as an EFD_MASK eventfd of the patched
 * kernel (kernel/patches): it has no counter; it holds a 12-byte packed
 * record { __u32 events; __u64 data; } that write(2) replaces and read(2)
 * returns, and poll(2), select(2), epoll(7), io_uring and aio poll report
 * exactly the stored events.
 *
 *  - open: O_RDWR only (anything else is EINVAL: a mask fd that cannot be
 *    both written and read is of no use, and each open makes a new one).
 *    O_NONBLOCK is accepted and kept (nothing here ever blocks); O_CLOEXEC
 *    is the VFS's business and works as for any open.  A new fd starts at
 *    {events 0, data 0}.
 *  - write: fewer than 12 bytes is EINVAL; more is accepted and only the
 *    first 12 are used (12 is returned).  Event bits outside
 *    POLLIN|POLLPRI|POLLOUT|POLLERR|POLLHUP are EINVAL, a bad buffer is
 *    EFAULT; both change nothing.  Never blocks.  Every write of a
 *    non-empty mask wakes the waiters (a new edge for edge-triggered epoll),
 *    keyed with the new events, or unkeyed when they contain POLLPRI
 *    (io_uring matches keys without EPOLLPRI); an empty mask wakes nobody.
 *  - read: fewer than 12 bytes is EINVAL; otherwise the record and 12.
 *    Never blocks, consumes nothing, wakes nobody.
 *  - fdinfo: "eventfd-mask: %x", "eventfd-data: %016llx", "eventfd-id: %d",
 *    the lines of the patched eventfd (the ids come from this module's own
 *    IDA, so they may repeat eventfd ids).
 *
 * Safety: a mask fd is not an eventfd (its f_op is not eventfd_fops), so
 * every in-kernel eventfd consumer (io_uring IORING_REGISTER_EVENTFD, aio
 * IOCB_FLAG_RESFD, memcg cgroup.event_control, KVM, vhost, VFIO, ...)
 * refuses it in eventfd_fget()/eventfd_ctx_fileget() with EINVAL.  Nothing
 * here can BUG; the context is charged to the opener's memory cgroup
 * (GFP_KERNEL_ACCOUNT); the fops' owner keeps the module loaded while any
 * mask fd is open, so an unload is refused then.
 *
 * Written for Debian's 6.1 and 6.12 kernels; it uses no API that differs
 * between them.
 */
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/wait.h>

/* The record read and written, as include/uapi/linux/eventfd.h of the patch. */
struct efd_mask_record {
	__u32 events;
	__u64 data;
} __packed;

/* The poll(2) bits a mask may hold. */
#define EFD_MASK_EVENTS (POLLIN | POLLPRI | POLLOUT | POLLERR | POLLHUP)

struct efd_mask_ctx {
	/* Its lock guards events and data. */
	wait_queue_head_t wqh;
	/* Written under wqh.lock; poll reads it with READ_ONCE after poll_wait. */
	__u32 events;
	__u64 data;
	int id;
};

static DEFINE_IDA(efd_mask_ida);

static int efd_mask_open(struct inode *inode, struct file *file)
{
	struct efd_mask_ctx *ctx;
	int id;

	if ((file->f_flags & O_ACCMODE) != O_RDWR)
		return -EINVAL;
	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	id = ida_alloc(&efd_mask_ida, GFP_KERNEL);
	if (id < 0) {
		kfree(ctx);
		return id;
	}
	init_waitqueue_head(&ctx->wqh);
	ctx->id = id;
	/* misc_open left the miscdevice here; the fd owns its context now. */
	file->private_data = ctx;
	/* Reads and writes never block: io_uring may issue them inline. */
	file->f_mode |= FMODE_NOWAIT;
	return 0;
}

/*
 * By the time the last reference goes, no one can wait on wqh: epoll
 * entries are removed before ->release (eventpoll_release), and poll,
 * select, io_uring and aio polls hold a reference to the file while they
 * wait.  No in-kernel user can hold the context, since no eventfd getter
 * accepts this file.
 */
static int efd_mask_release(struct inode *inode, struct file *file)
{
	struct efd_mask_ctx *ctx = file->private_data;

	ida_free(&efd_mask_ida, ctx->id);
	kfree(ctx);
	return 0;
}

static __poll_t efd_mask_poll(struct file *file, poll_table *wait)
{
	struct efd_mask_ctx *ctx = file->private_data;

	/*
	 * poll_wait() adds the entry under wqh.lock, and a writer stores the
	 * events and wakes under the same lock: either the writer's critical
	 * section came first and the read below sees its events, or it comes
	 * later and finds this entry to wake (the argument of eventfd_poll).
	 */
	poll_wait(file, &ctx->wqh, wait);
	return demangle_poll(READ_ONCE(ctx->events));
}

static ssize_t efd_mask_read(struct kiocb *iocb, struct iov_iter *to)
{
	struct efd_mask_ctx *ctx = iocb->ki_filp->private_data;
	struct efd_mask_record rec;

	if (iov_iter_count(to) < sizeof(rec))
		return -EINVAL;
	spin_lock_irq(&ctx->wqh.lock);
	rec.events = ctx->events;
	rec.data = ctx->data;
	spin_unlock_irq(&ctx->wqh.lock);
	if (copy_to_iter(&rec, sizeof(rec), to) != sizeof(rec))
		return -EFAULT;
	return sizeof(rec);
}

static ssize_t efd_mask_write(struct file *file, const char __user *buf, size_t count, loff_t *ppos)
{
	struct efd_mask_ctx *ctx = file->private_data;
	struct efd_mask_record rec;
	__poll_t key;

	if (count < sizeof(rec))
		return -EINVAL;
	if (copy_from_user(&rec, buf, sizeof(rec)))
		return -EFAULT;
	if (rec.events & ~EFD_MASK_EVENTS)
		return -EINVAL;

	/* Unkeyed when PRI is set: io_uring's poll drops EPOLLPRI from its key match. */
	key = demangle_poll(rec.events);
	if (key & EPOLLPRI)
		key = 0;

	spin_lock_irq(&ctx->wqh.lock);
	WRITE_ONCE(ctx->events, rec.events);
	ctx->data = rec.data;
	/*
	 * As eventfd does around its wakeups: an aio or io_uring poll
	 * completion that signals a (counter) eventfd from inside this wakeup
	 * takes its deferred path instead of nesting eventfd locks.
	 */
	current->in_eventfd = 1;
	if (rec.events && waitqueue_active(&ctx->wqh))
		wake_up_locked_poll(&ctx->wqh, key);
	current->in_eventfd = 0;
	spin_unlock_irq(&ctx->wqh.lock);
	return sizeof(rec);
}

#ifdef CONFIG_PROC_FS
static void efd_mask_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct efd_mask_ctx *ctx = file->private_data;

	spin_lock_irq(&ctx->wqh.lock);
	seq_printf(m, "eventfd-mask: %x\n", ctx->events);
	seq_printf(m, "eventfd-data: %016llx\n", (unsigned long long)ctx->data);
	spin_unlock_irq(&ctx->wqh.lock);
	seq_printf(m, "eventfd-id: %d\n", ctx->id);
}
#endif

static const struct file_operations efd_mask_fops = {
	.owner = THIS_MODULE,
	.open = efd_mask_open,
	.release = efd_mask_release,
	.poll = efd_mask_poll,
	.read_iter = efd_mask_read,
	.write = efd_mask_write,
	.llseek = noop_llseek,
#ifdef CONFIG_PROC_FS
	.show_fdinfo = efd_mask_show_fdinfo,
#endif
};

static struct miscdevice efd_mask_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "efd_mask",
	.fops = &efd_mask_fops,
	.mode = 0666,
};

static int __init efd_mask_init(void)
{
	BUILD_BUG_ON(sizeof(struct efd_mask_record) != 12);
	BUILD_BUG_ON(EFD_MASK_EVENTS != 0x1f);
	return misc_register(&efd_mask_dev);
}

static void __exit efd_mask_exit(void)
{
	misc_deregister(&efd_mask_dev);
	ida_destroy(&efd_mask_ida);
}

module_init(efd_mask_init);
module_exit(efd_mask_exit);

MODULE_DESCRIPTION("efd_mask: /dev/efd_mask hands out fds whose poll readiness user space sets (EFD_MASK semantics)");
MODULE_AUTHOR("UserProto");
MODULE_LICENSE("Dual MIT/GPL");
